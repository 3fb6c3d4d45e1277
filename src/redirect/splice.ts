// The kernel side of the same-node splice (bpf/lib/splice.h, native/src/splice.h): the stream
// verdict attached to nm_splice once per load, and the calls the proxy makes per connection.
// The proxy's half (when to splice, ordering, half-close, telemetry) is src/proxy/splice.ts.
import { nativeFailure, type NativeBinding } from './native.js';
import type { LoadedRedirect } from './loader.js';
import { SPLICE_PROG } from './loader.js';

/** What the kernel says of one TCP socket whose bytes the proxy no longer sees. */
export interface TcpStats {
  /** Payload bytes received, in order (tcpi_bytes_received). */
  bytesReceived: number;
  /** Payload bytes sent and acknowledged (tcpi_bytes_acked). */
  bytesAcked: number;
  /** Bytes in the send queue not yet acknowledged (SIOCOUTQ). */
  outq: number;
  /** Milliseconds since the last payload byte arrived. */
  lastDataRecvMs: number;
}

/** Structurally the proxy's SocketSplicer (src/proxy/types.ts). */
export class KernelSplice {
  readonly #b: NativeBinding;
  readonly #maps: [number, number, number];

  private constructor(b: NativeBinding, maps: [number, number, number]) {
    this.#b = b;
    this.#maps = maps;
  }

  /** Attaches the verdict to nm_splice; throws NM_ERR_NATIVE naming the step when the kernel refuses. */
  static attach(loaded: LoadedRedirect): KernelSplice {
    const prog = loaded.progs.get(SPLICE_PROG)!;
    try {
      loaded.binding.spliceAttach(prog.fd, loaded.maps.splice);
    } catch (err) {
      throw nativeFailure('NM_ERR_NATIVE', `attaching ${SPLICE_PROG} to nm_splice (the same-node kernel splice)`, err);
    }
    return new KernelSplice(loaded.binding, [loaded.maps.splice, loaded.maps.splicePeer, loaded.maps.spliceTaken]);
  }

  /** The same splice from another thread of this process (a proxy worker): the maps' fds are the process's. */
  static fromMaps(b: NativeBinding, maps: readonly [number, number, number]): KernelSplice {
    return new KernelSplice(b, [maps[0], maps[1], maps[2]]);
  }

  /** nm_splice, nm_splice_peer and nm_splice_taken, for fromMaps in a proxy worker. */
  get maps(): [number, number, number] {
    return [...this.#maps];
  }

  pair(fdA: number, fdB: number): [bigint, bigint] {
    return this.#b.splicePair(...this.#maps, fdA, fdB);
  }

  taken(cookie: bigint, total: number): void {
    this.#b.spliceTaken(...this.#maps, cookie, total);
  }

  release(cookieA: bigint, cookieB: bigint): void {
    this.#b.spliceRelease(...this.#maps, cookieA, cookieB);
  }

  stats(fd: number): TcpStats {
    return tcpStatsOf(this.#b, fd);
  }
}

export function tcpStatsOf(b: NativeBinding, fd: number): TcpStats {
  const [bytesReceived, bytesAcked, outq, lastDataRecvMs] = b.tcpStats(fd);
  return { bytesReceived, bytesAcked, outq, lastDataRecvMs };
}
