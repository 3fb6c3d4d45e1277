// HTTP/1.1 bodies crossing the engine, each way with backpressure. Up: held (bounded: the
// session stops reading) until a connection is attached, then written in the client's framing,
// chunks re-chunked one to one. Down: written in the framing chosen for the client, the
// upstream paused while the client drains.
import type { EngineContext } from './context.js';
import { chunkHeader, lastChunk, type Framing } from './head.js';
import type { Stream } from './types.js';

export class Upload {
  readonly #chunked: boolean;
  readonly #ctx: EngineContext;
  /** Called when a blocked upstream drained (the session may read the client again). */
  readonly #unblocked: () => void;
  #stream: Stream | undefined;
  #pending: Buffer[] | undefined;
  #pendingBytes = 0;
  #ended = false;
  #trailers: string[] | undefined;
  #blocked = false;

  constructor(chunked: boolean, ctx: EngineContext, unblocked: () => void) {
    this.#chunked = chunked;
    this.#ctx = ctx;
    this.#unblocked = unblocked;
  }

  /** Bytes may go straight up: attached, nothing held, not backpressured. */
  canWrite(): boolean {
    return this.#stream !== undefined && !this.#blocked && this.#pending === undefined;
  }

  body(b: Buffer): void {
    if (this.#stream && this.#pending === undefined) {
      this.#body(b);
      return;
    }
    (this.#pending ??= []).push(b);
    this.#pendingBytes += b.length;
    this.#ctx.queued(this.#pendingBytes);
  }

  end(trailers: string[] | undefined): void {
    this.#ended = true;
    if (this.#stream && this.#pending === undefined) {
      if (this.#chunked) this.#write(lastChunk(trailers));
    } else this.#trailers = trailers;
  }

  /** What is held for a connection not attached yet: the body so far, and whether it ended. */
  held(): { chunks: readonly Buffer[]; ended: boolean; trailers: string[] | undefined } {
    return { chunks: this.#pending ?? [], ended: this.#ended, trailers: this.#trailers };
  }

  /** Sends `head` and whatever was held, in one write. */
  attach(stream: Stream, head: string): void {
    this.#stream = stream;
    stream.cork();
    this.#write(head);
    const pending = this.#pending;
    this.#pending = undefined;
    this.#pendingBytes = 0;
    if (pending) for (const b of pending) this.#body(b);
    if (this.#ended && this.#chunked) this.#write(lastChunk(this.#trailers));
    stream.uncork();
  }

  /** The connection is gone; bytes from now on are dropped. */
  detach(): void {
    this.#stream = undefined;
    this.#pending = undefined;
    this.#pendingBytes = 0;
  }

  #body(b: Buffer): void {
    if (this.#chunked) {
      this.#write(chunkHeader(b.length));
      this.#write(b);
      this.#write('\r\n');
    } else this.#write(b);
  }

  #write(data: string | Buffer): void {
    const st = this.#stream!;
    const ok = typeof data === 'string' ? st.write(data, 'latin1') : st.write(data);
    if (ok) return;
    this.#ctx.queued(st.writableLength);
    if (this.#blocked) return;
    this.#blocked = true;
    st.once('drain', () => {
      this.#blocked = false;
      this.#unblocked();
    });
    this.#unblocked();
  }
}

/** What goes to the client: heads and bodies, with the upstream paused while the client lags. */
export class Download {
  readonly #client: Stream;
  readonly #ctx: EngineContext;
  framing: Framing = 'none';
  /** The upstream being read, paused while the client is backpressured. */
  #source: Stream | undefined;
  #blocked = false;

  constructor(client: Stream, ctx: EngineContext) {
    this.#client = client;
    this.#ctx = ctx;
  }

  /** Reads from `source` from now on (undefined: none; a paused one is resumed). */
  from(source: Stream | undefined): void {
    if (this.#blocked && this.#source && this.#source !== source) this.#source.resume();
    this.#source = source;
  }

  body(b: Buffer): void {
    if (this.framing === 'chunked') {
      this.write(chunkHeader(b.length));
      this.write(b);
      this.write('\r\n');
    } else this.write(b);
  }

  end(trailers: string[] | undefined): void {
    if (this.framing === 'chunked') this.write(lastChunk(trailers));
  }

  write(data: string | Buffer): void {
    const client = this.#client;
    const ok = typeof data === 'string' ? client.write(data, 'latin1') : client.write(data);
    if (ok) return;
    this.#ctx.queued(client.writableLength);
    const src = this.#source;
    if (!src || this.#blocked) return;
    this.#blocked = true;
    src.pause();
    client.once('drain', () => {
      this.#blocked = false;
      if (this.#source === src) src.resume();
    });
  }
}
