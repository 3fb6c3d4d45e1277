// An established HBONE tunnel seen as a TCP-like socket for the relay: bytes both ways with
// backpressure, END_STREAM <-> FIN, RST_STREAM <-> reset, and byte counts for telemetry.
import { constants, type Http2Stream } from 'node:http2';
import { Duplex } from 'node:stream';
import { HboneResetError } from '../../errors.js';
import { h2CodeName } from './errors.js';

const { NGHTTP2_NO_ERROR, NGHTTP2_CANCEL, NGHTTP2_CONNECT_ERROR } = constants;

type Callback = (err?: Error | null) => void;

const EMPTY = Buffer.alloc(0);

function noError(code: number | undefined): boolean {
  return code === undefined || code === NGHTTP2_NO_ERROR;
}

/**
 * Sends RST_STREAM without a clean END_STREAM ahead of it. Http2Stream.close() ends the
 * writable side first, and when nothing is being written that puts END_STREAM on the wire
 * before the RST_STREAM, so the peer would see a FIN, then the reset. With a write in flight
 * Node defers the END_STREAM until after the reset, when the stream is gone and it is dropped.
 */
function rstStream(h2: Http2Stream, code: number): void {
  if (!h2.writableEnded) h2.write(EMPTY);
  h2.close(code);
}

/**
 * Wraps the HTTP/2 stream of an established CONNECT tunnel (after the 200).
 *
 * - `end()` sends END_STREAM; the peer's END_STREAM ends the readable side ('end').
 * - A tunnel that closes before both sides ended (RST_STREAM, GOAWAY with the stream unfinished,
 *   the session or its TCP connection failing) is destroyed with NM_ERR_HBONE_RESET, never a
 *   clean 'end', so the relay resets the app's socket.
 * - `resetAndDestroy()` sends RST_STREAM(CONNECT_ERROR), as RFC 9113 §8.5 asks of a proxy
 *   whose TCP side failed; a plain `destroy()` mid-stream sends CANCEL.
 * - `bytesRead` / `bytesWritten` count tunnel payload, like a socket's.
 */
export class HboneStream extends Duplex {
  /** Payload bytes received from the peer. */
  bytesRead = 0;
  /** Payload bytes accepted for sending to the peer. */
  bytesWritten = 0;
  readonly #h2: Http2Stream;
  readonly #label: string;
  #resetCode: number | undefined;
  /** The peer's END_STREAM arrived. */
  #gotEnd = false;
  /** Our END_STREAM was handed to the session. */
  #sentEnd = false;
  /** The peer closed the stream (NO_ERROR) after its END_STREAM, before ours: it reads no more. */
  #peerStoppedReading = false;
  #writeCb: Callback | undefined;
  #finalCb: Callback | undefined;

  /** `label` names the tunnel in errors, e.g. "10.0.0.5:8080 via 10.0.0.5:15008". */
  constructor(h2: Http2Stream, label: string) {
    super({ allowHalfOpen: true });
    this.#h2 = h2;
    this.#label = label;
    h2.on('data', (chunk: Buffer) => {
      this.bytesRead += chunk.length;
      if (!this.push(chunk)) h2.pause();
    });
    h2.on('end', () => {
      // Node also ends a stream's readable side when the stream is reset or its session dies;
      // only an END_STREAM that arrived while the stream was healthy is a FIN.
      if (h2.destroyed || !noError(h2.rstCode)) return;
      this.#gotEnd = true;
      // Node emits 'end' between the callbacks for the frames of one read, so a RST_STREAM
      // right behind the END_STREAM is only seen after it. Wait for the rest of the read
      // before reporting a clean end; if it was a reset, #onClose fails the stream instead.
      setImmediate(() => {
        if (!this.destroyed && noError(h2.rstCode)) this.push(null);
      });
    });
    h2.on('drain', () => {
      const cb = this.#writeCb;
      this.#writeCb = undefined;
      cb?.();
    });
    h2.on('finish', () => {
      this.#sentEnd = true;
      const cb = this.#finalCb;
      this.#finalCb = undefined;
      cb?.();
    });
    h2.on('error', (err: Error) => this.#fail(err));
    h2.on('close', () => this.#onClose());
    if (h2.destroyed) queueMicrotask(() => this.#onClose());
  }

  /** The tunnel is already framed on a TCP_NODELAY session socket; kept for socket parity. */
  setNoDelay(_noDelay = true): this {
    return this;
  }

  /** Resets the tunnel: RST_STREAM(CONNECT_ERROR) to the peer, then destroys this end. */
  resetAndDestroy(): this {
    this.#resetCode ??= NGHTTP2_CONNECT_ERROR;
    this.destroy();
    return this;
  }

  override _read(): void {
    if (this.#h2.isPaused()) this.#h2.resume();
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: Callback): void {
    if (this.#peerStoppedReading || this.#h2.destroyed) {
      cb(this.#resetError('the peer closed the tunnel and reads no more'));
      return;
    }
    this.bytesWritten += chunk.length;
    if (this.#h2.write(chunk)) cb();
    else this.#writeCb = cb;
  }

  override _writev(chunks: { chunk: Buffer }[], cb: Callback): void {
    if (this.#peerStoppedReading || this.#h2.destroyed) {
      cb(this.#resetError('the peer closed the tunnel and reads no more'));
      return;
    }
    const h2 = this.#h2;
    let ok = true;
    h2.cork();
    for (const { chunk } of chunks) {
      this.bytesWritten += chunk.length;
      ok = h2.write(chunk);
    }
    h2.uncork();
    if (ok) cb();
    else this.#writeCb = cb;
  }

  override _final(cb: Callback): void {
    if (this.#peerStoppedReading || this.#sentEnd) {
      cb();
      return;
    }
    if (this.#h2.destroyed) {
      cb(this.#resetError('the tunnel closed before our end of stream was sent'));
      return;
    }
    this.#finalCb = cb;
    this.#h2.end();
  }

  override _destroy(err: Error | null, cb: Callback): void {
    this.#writeCb = undefined;
    this.#finalCb = undefined;
    const h2 = this.#h2;
    if (!h2.destroyed && !h2.closed) {
      const clean = !err && this.#resetCode === undefined && this.#gotEnd && this.#sentEnd;
      if (!clean) rstStream(h2, this.#resetCode ?? (err ? NGHTTP2_CONNECT_ERROR : NGHTTP2_CANCEL));
    }
    cb(err);
  }

  #onClose(): void {
    if (this.destroyed) return;
    const code = this.#h2.rstCode;
    if (noError(code) && this.#gotEnd) {
      if (this.#sentEnd) return; // both sides finished: a clean close
      // RFC 9113 §8.1: after its END_STREAM a peer may close with NO_ERROR to say it wants no
      // more data. Like a TCP peer that closed: fine unless we still have bytes for it.
      this.#peerStoppedReading = true;
      const pending = this.#writeCb !== undefined || this.writableLength > 0;
      const finalCb = this.#finalCb;
      this.#finalCb = undefined;
      if (pending) this.#fail(undefined);
      else finalCb?.();
      return;
    }
    this.#fail(undefined);
  }

  #fail(cause: Error | undefined): void {
    if (this.destroyed) return;
    this.destroy(this.#resetError(undefined, cause));
  }

  #resetError(why: string | undefined, cause?: Error): HboneResetError {
    const h2Code = this.#h2.rstCode;
    const reason = why ?? (h2Code !== undefined && h2Code !== NGHTTP2_NO_ERROR ? `RST_STREAM ${h2CodeName(h2Code)}` : 'the tunnel closed before both sides finished');
    return new HboneResetError(`HBONE tunnel ${this.#label} was reset: ${reason}; the connection is reset, not ended`, {
      ...(h2Code !== undefined ? { h2Code } : {}),
      ...(cause ? { cause } : {}),
    });
  }
}
