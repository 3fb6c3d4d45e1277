// Original-destination lookup for captured connections, from the nm_orig_dst map sockops fills.
import { AgentError } from '../errors.js';
import { isNativeSystemError, nativeFailure, type NativeBinding } from './native.js';
import type { SocketAddress } from './types.js';
import { assertFd } from './validate.js';

/**
 * Errnos of the lookup's getpeername that mean the client already reset or closed the
 * connection (a connect followed at once by close with SO_LINGER 0): nothing is wrong with
 * the map or the agent, and the accepted socket has nobody left to answer.
 */
const PEER_GONE = new Set(['ENOTCONN', 'ECONNRESET']);

/**
 * The destination a captured connection was originally headed to, for a socket accepted
 * on the outbound listener; null when the connection was not captured (or its entry is
 * already gone). Throws NM_ERR_ORIGINAL_DST when the lookup fails; when it failed because
 * the peer is already gone, the error carries `details.peerGone: true` (and `sysCode`
 * ENOTCONN), so the caller can drop the connection quietly instead of reporting a fault.
 */
export function lookupOriginalDst(binding: NativeBinding, origDstMap: number, fd: number): SocketAddress | null {
  assertFd(fd);
  try {
    return binding.originalDst(origDstMap, fd);
  } catch (err) {
    if (isNativeSystemError(err) && PEER_GONE.has(err.code)) {
      throw new AgentError('NM_ERR_ORIGINAL_DST', `looking up the original destination of fd ${fd}: the client already closed the connection (${err.code} from ${err.syscall})`, {
        cause: err,
        errno: err.errno,
        syscall: err.syscall,
        sysCode: err.code,
        peerGone: true,
      });
    }
    throw nativeFailure('NM_ERR_ORIGINAL_DST', `looking up the original destination of fd ${fd}`, err);
  }
}
