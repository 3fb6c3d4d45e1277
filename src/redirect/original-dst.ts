// Original-destination lookup for captured connections, from the nm_orig_dst map sockops fills.
import { nativeFailure, type NativeBinding } from './native.js';
import type { SocketAddress } from './types.js';
import { assertFd } from './validate.js';

/**
 * The destination a captured connection was originally headed to, for a socket accepted
 * on the outbound listener; null when the connection was not captured (or already closed).
 */
export function lookupOriginalDst(binding: NativeBinding, origDstMap: number, fd: number): SocketAddress | null {
  assertFd(fd);
  try {
    return binding.originalDst(origDstMap, fd);
  } catch (err) {
    throw nativeFailure('NM_ERR_ORIGINAL_DST', `looking up the original destination of fd ${fd}`, err);
  }
}
