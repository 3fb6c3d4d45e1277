// Joins two TCP sockets: bytes both ways with backpressure, half-close carried across, a
// reset on one side carried to the other as a reset (never turned into a clean EOF), TCP
// keepalive on both, and an idle timeout that closes a connection no byte crossed for long.
import type { Duplex } from 'node:stream';
import type { PlaintextSink } from './types.js';

/** Either end of a relay: a TCP socket, or anything that behaves like one (an HBONE stream). */
export type RelayEnd = Duplex & {
  readonly bytesRead: number;
  setNoDelay(noDelay?: boolean): unknown;
  /** TCP sockets only; an HBONE stream rides a session socket that has its own keepalive. */
  setKeepAlive?(enable?: boolean, initialDelay?: number): unknown;
  resetAndDestroy(): unknown;
};

/** Envoy's tcp_proxy idle_timeout default: 1 h. */
export const DEFAULT_IDLE_TIMEOUT_MS = 3_600_000;
/** ztunnel's keepalive idle time (180 s): a peer that vanished without a FIN is noticed. */
export const DEFAULT_KEEPALIVE_MS = 180_000;

/** Node's timers hold at most 2^31-1 ms (about 24.8 days); a longer idle timeout re-arms. */
export const MAX_TIMER_MS = 2 ** 31 - 1;

export interface RelayOptions {
  /**
   * A connection with no byte in either direction for this long is closed on both sides, as
   * Envoy's tcp_proxy `idle_timeout` does (default 1 h); 0 disables.
   */
  idleTimeoutMs?: number;
  /** TCP keepalive idle time on both sockets (default 180 s); 0 disables. */
  keepAliveMs?: number;
}

export interface RelayResult {
  /** Bytes from the downstream (client) side toward upstream. */
  sent: number;
  /** Bytes from upstream back to the client. */
  received: number;
  /** First error seen on either side, if any. */
  error?: Error & { code?: string };
  /** Which side failed first. */
  failedSide?: 'downstream' | 'upstream';
  /** Closed by the idle timeout. */
  idleTimeout?: true;
}

/** Live byte counts of a relay, for periodic metric flushes. */
export interface RelayProgress {
  sent(): number;
  received(): number;
}

/** How a pair of ends finished: the first error on either side, and which side it was. */
export type Fate = Pick<RelayResult, 'error' | 'failedSide'>;

/**
 * Ties the two ends' fates together: an error on one side resets the other (the peer must see
 * that the connection broke, not a clean end of stream that could be mistaken for success), an
 * abrupt close without an error (peer vanished) does too, and `onBothClosed` runs once both are
 * closed. With allowHalfOpen, a socket whose both directions are finished is destroyed by the
 * stream machinery (autoDestroy), which emits 'close'.
 */
export function joinFates(down: RelayEnd, up: RelayEnd, onBothClosed: (f: Fate) => void): void {
  let error: (Error & { code?: string }) | undefined;
  let failedSide: 'downstream' | 'upstream' | undefined;
  let closed = 0;
  const fail = (side: 'downstream' | 'upstream', other: RelayEnd) => (err: Error & { code?: string }) => {
    if (!error) {
      error = err;
      failedSide = side;
    }
    if (!other.destroyed) other.resetAndDestroy();
  };
  down.on('error', fail('downstream', up));
  up.on('error', fail('upstream', down));
  const onClose = (): void => {
    if (++closed < 2) return;
    onBothClosed(error ? { error, failedSide: failedSide! } : {});
  };
  down.once('close', onClose);
  up.once('close', onClose);
  down.once('close', () => {
    if (!up.destroyed && !down.readableEnded) up.resetAndDestroy();
  });
  up.once('close', () => {
    if (!down.destroyed && !up.readableEnded) down.resetAndDestroy();
  });
}

/**
 * Relays until both sockets are closed. Both sockets must have been created with
 * `allowHalfOpen: true`, so a FIN from one side only ends that direction.
 */
export function relay(down: RelayEnd, up: RelayEnd, o: RelayOptions = {}): { done: Promise<RelayResult>; progress: RelayProgress } {
  const idleMs = o.idleTimeoutMs ?? DEFAULT_IDLE_TIMEOUT_MS;
  const keepAliveMs = o.keepAliveMs ?? DEFAULT_KEEPALIVE_MS;
  if (!(idleMs >= 0)) throw new RangeError(`idleTimeoutMs must be >= 0, got ${o.idleTimeoutMs}`);
  if (!(keepAliveMs >= 0)) throw new RangeError(`keepAliveMs must be >= 0, got ${o.keepAliveMs}`);
  for (const end of [down, up]) {
    end.setNoDelay(true);
    if (keepAliveMs > 0) end.setKeepAlive?.(true, keepAliveMs);
  }
  const progress: RelayProgress = {
    sent: () => down.bytesRead,
    received: () => up.bytesRead,
  };
  const done = new Promise<RelayResult>((resolve) => {
    let idleTimer: NodeJS.Timeout | undefined;
    let timedOut = false;
    joinFates(down, up, (f) => {
      clearTimeout(idleTimer);
      resolve({ sent: down.bytesRead, received: up.bytesRead, ...f, ...(timedOut ? { idleTimeout: true as const } : {}) });
    });

    down.pipe(up);
    up.pipe(down);

    if (idleMs > 0) {
      // Activity is any chunk read on either side (a write on one is a read on the other).
      // Listening after pipe() so these listeners never start the flow on their own.
      let last = Date.now();
      const touch = (): void => {
        last = Date.now();
      };
      down.on('data', touch);
      up.on('data', touch);
      const check = (): void => {
        const idle = Date.now() - last;
        if (idle < idleMs) {
          idleTimer = setTimeout(check, Math.min(idleMs - idle, MAX_TIMER_MS)).unref();
          return;
        }
        // Nothing is in flight, so a close (FIN) is honest here, as Envoy closes on its idle
        // timeout. Both at once, so neither close is mistaken for an abrupt one and reset.
        timedOut = true;
        down.destroy();
        up.destroy();
      };
      idleTimer = setTimeout(check, Math.min(idleMs, MAX_TIMER_MS)).unref();
    }
  });
  return { done, progress };
}

/**
 * Copies what a running relay carries to a capture sink, after relay() piped both ends (so the
 * listeners never start or hold the flow). The sink cannot slow the relay: it only queues, and
 * one that throws is cut off, never the connection.
 */
export function tapRelay(down: RelayEnd, up: RelayEnd, sink: PlaintextSink, done: Promise<unknown>): void {
  let live = true;
  const safe = (fn: () => void): void => {
    if (!live) return;
    try {
      fn();
    } catch {
      live = false;
    }
  };
  down.on('data', (c: Buffer) => safe(() => sink.data('c2s', c)));
  up.on('data', (c: Buffer) => safe(() => sink.data('s2c', c)));
  down.once('end', () => safe(() => sink.end('c2s')));
  up.once('end', () => safe(() => sink.end('s2c')));
  void done.finally(() => safe(() => sink.close()));
}
