// Joins two TCP sockets: bytes both ways with backpressure, half-close carried across, and a
// reset on one side carried to the other as a reset (never turned into a clean EOF).
import type { Duplex } from 'node:stream';

/** Either end of a relay: a TCP socket, or anything that behaves like one (an HBONE stream). */
export type RelayEnd = Duplex & {
  readonly bytesRead: number;
  setNoDelay(noDelay?: boolean): unknown;
  resetAndDestroy(): unknown;
};

export interface RelayResult {
  /** Bytes from the downstream (client) side toward upstream. */
  sent: number;
  /** Bytes from upstream back to the client. */
  received: number;
  /** First error seen on either side, if any. */
  error?: Error & { code?: string };
  /** Which side failed first. */
  failedSide?: 'downstream' | 'upstream';
}

/** Live byte counts of a relay, for periodic metric flushes. */
export interface RelayProgress {
  sent(): number;
  received(): number;
}

/**
 * Relays until both sockets are closed. Both sockets must have been created with
 * `allowHalfOpen: true`, so a FIN from one side only ends that direction.
 */
export function relay(down: RelayEnd, up: RelayEnd): { done: Promise<RelayResult>; progress: RelayProgress } {
  down.setNoDelay(true);
  up.setNoDelay(true);
  const progress: RelayProgress = {
    sent: () => down.bytesRead,
    received: () => up.bytesRead,
  };
  const done = new Promise<RelayResult>((resolve) => {
    let error: (Error & { code?: string }) | undefined;
    let failedSide: 'downstream' | 'upstream' | undefined;
    let closed = 0;

    const fail = (side: 'downstream' | 'upstream', other: RelayEnd) => (err: Error & { code?: string }) => {
      if (!error) {
        error = err;
        failedSide = side;
      }
      // A reset (or any error) on one side resets the other: the peer must see that the
      // connection broke, not a clean end of stream that could be mistaken for success.
      if (!other.destroyed) other.resetAndDestroy();
    };
    down.on('error', fail('downstream', up));
    up.on('error', fail('upstream', down));

    const onClose = (): void => {
      if (++closed < 2) return;
      resolve({ sent: down.bytesRead, received: up.bytesRead, ...(error ? { error, failedSide } : {}) });
    };
    // With allowHalfOpen, a socket whose both directions are finished is destroyed by the
    // stream machinery (autoDestroy), which emits 'close'.
    down.once('close', onClose);
    up.once('close', onClose);
    // An abrupt close without an error event (peer vanished) still ends the other side.
    down.once('close', () => {
      if (!up.destroyed && !down.readableEnded) up.resetAndDestroy();
    });
    up.once('close', () => {
      if (!down.destroyed && !up.readableEnded) down.resetAndDestroy();
    });

    down.pipe(up);
    up.pipe(down);
  });
  return { done, progress };
}
