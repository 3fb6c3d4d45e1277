// The raw byte tunnel after a 101 Switching Protocols (WebSocket): both directions piped with
// backpressure, a FIN carried as a FIN, and an error on either side as a reset of the other.
import { resetStream, type Stream } from './types.js';

export interface TunnelResult {
  /** Payload bytes from the client to the upstream. */
  sent: number;
  /** Payload bytes from the upstream to the client. */
  received: number;
  /** Either side failed (reset, error) rather than closing cleanly. */
  broken: boolean;
}

/** Joins `client` and `upstream` until both are closed, then calls `done` once. */
export function splice(client: Stream, upstream: Stream, done: (r: TunnelResult) => void): void {
  let sent = 0;
  let received = 0;
  let broken = false;
  const closed = new Set<Stream>();
  const count = (dir: 'up' | 'down') => (c: Buffer) => {
    if (dir === 'up') sent += c.length;
    else received += c.length;
  };
  const fail = (other: Stream) => (): void => {
    broken = true;
    resetStream(other);
  };
  const onClose = (self: Stream, other: Stream) => (): void => {
    if (closed.has(self)) return;
    closed.add(self);
    // A side that closed before its stream ended (no FIN read through) breaks the other too.
    if (!self.readableEnded && !other.destroyed) {
      broken = true;
      resetStream(other);
    }
    if (closed.size === 2) done({ sent, received, broken });
  };
  client.on('error', fail(upstream));
  upstream.on('error', fail(client));
  client.once('close', onClose(client, upstream));
  upstream.once('close', onClose(upstream, client));
  client.pipe(upstream);
  upstream.pipe(client);
  client.on('data', count('up'));
  upstream.on('data', count('down'));
  if (client.destroyed) queueMicrotask(onClose(client, upstream));
  if (upstream.destroyed) queueMicrotask(onClose(upstream, client));
}
