// The capture hub: fans records and plaintext chunks out to the consumers of /debug/capture,
// each through its own bounded queue. A consumer that reads slowly loses lines (counted, told
// to it, and in nodemesh_capture_dropped_total); nothing it does ever holds up the relay.
import { Counter, Gauge, type Registry } from 'prom-client';
import { matches, type CaptureFilter } from './filter.js';
import { RECORD_VERSION, type CaptureRecord, type StreamLine } from './record.js';

/** Where a consumer's lines go: `write` returns false when its buffer is full (Node's stream contract). */
export interface LineSink {
  write(line: string): boolean;
  onDrain(cb: () => void): void;
}

export interface ConsumerOptions {
  filter: CaptureFilter;
  /** Also stream the plaintext of matching proxied connections. */
  pcap: boolean;
  sink: LineSink;
}

/** A plaintext chunk waits as a Buffer; it becomes base64 only when it is written. */
type Item = { line: string; bytes: number } | { conn: number; t: number; dir: 'c2s' | 's2c'; seq: number; chunk: Buffer; bytes: number };

export interface HubOptions {
  node: string;
  registry?: Registry;
  /** Records kept for `since` replays (default 4096). */
  ringSize?: number;
  /** Most bytes a consumer's queue holds (default 4 MiB). */
  queueBytes?: number;
  /** Most lines a consumer's queue holds (default 8192). */
  queueItems?: number;
}

/** What a plaintext stream is opened with (the proxy's view of the connection). */
export interface TapConnection {
  pod: string;
  src: { ip: string; port: number; workload?: string; namespace?: string; principal?: string };
  dst: { ip: string; port: number; workload?: string; namespace?: string; principal?: string };
  originalDst: string;
}

export interface TapSink {
  data(dir: 'c2s' | 's2c', chunk: Buffer): void;
  end(dir: 'c2s' | 's2c'): void;
  close(): void;
}

export class Consumer {
  readonly filter: CaptureFilter;
  readonly pcap: boolean;
  readonly dropped = { flows: 0, chunks: 0 };
  readonly #hub: CaptureHub;
  readonly #sink: LineSink;
  readonly #queue: Item[] = [];
  #queued = 0;
  #blocked = false;
  /** Drops not yet reported to the consumer. */
  #unreported = { flows: 0, chunks: 0 };
  /** Streams whose open line this consumer lost: their data is dropped too. */
  readonly #lost = new Set<number>();
  closed = false;

  constructor(hub: CaptureHub, o: ConsumerOptions) {
    this.#hub = hub;
    this.filter = o.filter;
    this.pcap = o.pcap;
    this.#sink = o.sink;
    o.sink.onDrain(() => {
      this.#blocked = false;
      this.#flush();
    });
  }

  line(l: StreamLine, kind: 'flow' | 'chunk' = 'flow'): void {
    const s = JSON.stringify(l) + '\n';
    this.#push({ line: s, bytes: s.length }, kind, 'conn' in l ? l.conn : undefined);
  }

  chunk(conn: number, t: number, dir: 'c2s' | 's2c', seq: number, chunk: Buffer): void {
    if (this.#lost.has(conn)) return this.#drop('chunk');
    this.#push({ conn, t, dir, seq, chunk, bytes: Math.ceil(chunk.length / 3) * 4 + 80 }, 'chunk', conn);
  }

  forget(conn: number): void {
    this.#lost.delete(conn);
  }

  #push(item: Item, kind: 'flow' | 'chunk', conn: number | undefined): void {
    if (this.closed) return;
    const o = this.#hub.limits;
    if (this.#queue.length >= o.items || this.#queued + item.bytes > o.bytes) {
      if (conn !== undefined && 'line' in item && item.line.startsWith('{"type":"open"')) this.#lost.add(conn);
      return this.#drop(kind);
    }
    this.#queue.push(item);
    this.#queued += item.bytes;
    if (!this.#blocked) this.#flush();
  }

  #drop(kind: 'flow' | 'chunk'): void {
    if (kind === 'flow') {
      this.dropped.flows++;
      this.#unreported.flows++;
    } else {
      this.dropped.chunks++;
      this.#unreported.chunks++;
    }
    this.#hub.countDrop(kind);
  }

  #flush(): void {
    while (!this.#blocked && !this.closed) {
      if (this.#unreported.flows || this.#unreported.chunks) {
        const d: StreamLine = { type: 'dropped', ...this.#unreported };
        this.#unreported = { flows: 0, chunks: 0 };
        if (!this.#sink.write(JSON.stringify(d) + '\n')) this.#blocked = true;
        continue;
      }
      const item = this.#queue.shift();
      if (!item) return;
      this.#queued -= item.bytes;
      const text = 'line' in item ? item.line : JSON.stringify({ type: 'data', conn: item.conn, t: item.t, dir: item.dir, seq: item.seq, data: item.chunk.toString('base64') } satisfies StreamLine) + '\n';
      if (!this.#sink.write(text)) this.#blocked = true;
    }
  }

  close(): void {
    this.closed = true;
    this.#queue.length = 0;
    this.#queued = 0;
    this.#hub.remove(this);
  }
}

/** Microseconds since the epoch, as the stream's `t` fields carry them. */
export function nowMicros(): number {
  return Math.round((performance.timeOrigin + performance.now()) * 1000);
}

/** A kept record not built yet: its sequence number and how to build it. */
interface LazyRecord {
  lazy: number;
  build: () => Omit<CaptureRecord, 'v' | 'id' | 'node'>;
}

export class CaptureHub {
  readonly node: string;
  readonly limits: { bytes: number; items: number };
  /**
   * The last `#ringSize` records, a circular buffer: `#ringNext` is the slot written next. A slot
   * kept while nobody captured holds how to build its record, built when a replay first reads it.
   */
  readonly #ring: (CaptureRecord | LazyRecord)[] = [];
  readonly #ringSize: number;
  #ringNext = 0;
  readonly #consumers = new Set<Consumer>();
  #pcapConsumers = 0;
  #next = 1;
  #nextConn = 1;
  readonly #dropped?: Counter<'kind'>;
  readonly #gauge?: Gauge;
  readonly #onActive = new Set<(active: boolean) => void>();

  constructor(o: HubOptions) {
    this.node = o.node;
    this.#ringSize = o.ringSize ?? 4096;
    this.limits = { bytes: o.queueBytes ?? 4 << 20, items: o.queueItems ?? 8192 };
    if (o.registry) {
      this.#dropped = new Counter({ name: 'nodemesh_capture_dropped_total', help: 'Capture lines (flow records, plaintext chunks) dropped because a consumer read too slowly', labelNames: ['kind'], registers: [o.registry] });
      this.#gauge = new Gauge({ name: 'nodemesh_capture_consumers', help: 'Open /debug/capture streams', registers: [o.registry] });
    }
  }

  /** Adds an id and the node, keeps the record for replays, and sends it to every consumer it matches. */
  publish(r: Omit<CaptureRecord, 'v' | 'id' | 'node'>): CaptureRecord {
    const rec = this.#record(this.#next++, r);
    this.#keep(rec);
    for (const c of this.#consumers) if (matches(c.filter, rec)) c.line({ type: 'flow', flow: rec });
    return rec;
  }

  /**
   * publish() for a record that only a later replay may read: with nobody capturing it is kept
   * as `build` (its id taken now) and built if a `since` replay reaches it, so a connection
   * costs the data path a slot write instead of a record (docs/capture.md "Cost").
   */
  publishLazy(build: () => Omit<CaptureRecord, 'v' | 'id' | 'node'>): void {
    if (this.#consumers.size > 0) {
      this.publish(build());
      return;
    }
    this.#keep({ lazy: this.#next++, build });
  }

  #record(seq: number, r: Omit<CaptureRecord, 'v' | 'id' | 'node'>): CaptureRecord {
    return { v: RECORD_VERSION, id: `${this.node}/${seq}`, node: this.node, ...r } as CaptureRecord;
  }

  #keep(r: CaptureRecord | LazyRecord): void {
    // O(1) per connection: once full, the oldest slot is overwritten.
    if (this.#ringSize === 0) return;
    this.#ring[this.#ringNext] = r;
    this.#ringNext = (this.#ringNext + 1) % this.#ringSize;
  }

  #built(i: number): CaptureRecord {
    const r = this.#ring[i]!;
    if (!('lazy' in r)) return r;
    const rec = this.#record(r.lazy, r.build());
    this.#ring[i] = rec;
    return rec;
  }

  /** Starts a consumer: a hello line, the replay (`since`), then live lines. */
  subscribe(o: ConsumerOptions & { filterParams: Record<string, string> }): Consumer {
    const c = new Consumer(this, o);
    c.line({ type: 'hello', v: RECORD_VERSION, node: this.node, pcap: o.pcap, filter: o.filterParams });
    let count = 0;
    if (o.filter.sinceMs !== undefined) {
      const from = Date.now() - o.filter.sinceMs;
      for (const r of this.recent()) {
        if (Date.parse(r.time) >= from && matches(o.filter, r)) {
          c.line({ type: 'flow', flow: r });
          count++;
        }
      }
    }
    c.line({ type: 'replayed', count });
    this.#consumers.add(c);
    if (o.pcap) this.#pcapConsumers++;
    this.#gauge?.set(this.#consumers.size);
    if (this.#consumers.size === 1) for (const f of this.#onActive) f(true);
    return c;
  }

  remove(c: Consumer): void {
    if (!this.#consumers.delete(c)) return;
    if (c.pcap) this.#pcapConsumers--;
    this.#gauge?.set(this.#consumers.size);
    if (this.#consumers.size === 0) for (const f of this.#onActive) f(false);
  }

  /**
   * Called with true when the first consumer connects and false when the last one leaves: what
   * costs per connection (the kernel's events, their join) runs only while someone watches.
   */
  onActive(f: (active: boolean) => void): () => void {
    this.#onActive.add(f);
    return () => this.#onActive.delete(f);
  }

  get active(): boolean {
    return this.#consumers.size > 0;
  }

  countDrop(kind: 'flow' | 'chunk'): void {
    this.#dropped?.inc({ kind });
  }

  /** The kept records, oldest first. */
  recent(): CaptureRecord[] {
    const n = this.#ring.length;
    const first = n < this.#ringSize ? 0 : this.#ringNext;
    return Array.from({ length: n }, (_, k) => this.#built((first + k) % n));
  }

  /**
   * A plaintext stream for a connection the proxy is about to relay, or undefined when no
   * pcap consumer wants it: then the relay carries no tap at all.
   */
  openTap(t: TapConnection): TapSink | undefined {
    if (this.#pcapConsumers === 0) return undefined;
    const view = {
      src: { ip: t.src.ip, port: t.src.port, ...(t.src.workload && t.src.namespace ? { pod: `${t.src.namespace}/${t.src.workload}` } : {}) },
      dst: { ip: t.dst.ip, port: t.dst.port, ...(t.dst.workload && t.dst.namespace ? { pod: `${t.dst.namespace}/${t.dst.workload}` } : {}) },
      originalDst: t.originalDst,
      verdict: 'allowed' as const,
      protocol: 'tcp' as const,
    };
    const takers = [...this.#consumers].filter((c) => c.pcap && matches(c.filter, view));
    if (takers.length === 0) return undefined;
    const conn = this.#nextConn++;
    const seq = { c2s: 0, s2c: 0 };
    const open: StreamLine = { type: 'open', conn, t: nowMicros(), src: { ip: t.src.ip, port: t.src.port }, dst: { ip: t.dst.ip, port: t.dst.port }, pod: t.pod };
    for (const c of takers) c.line(open, 'chunk');
    let done = false;
    return {
      data: (dir, chunk) => {
        const t0 = nowMicros();
        for (const c of takers) if (!c.closed) c.chunk(conn, t0, dir, seq[dir], chunk);
        seq[dir] += chunk.length;
      },
      end: (dir) => {
        const line: StreamLine = { type: 'end', conn, t: nowMicros(), dir, seq: seq[dir] };
        for (const c of takers) if (!c.closed) c.line(line, 'chunk');
      },
      close: () => {
        if (done) return;
        done = true;
        const line: StreamLine = { type: 'close', conn, t: nowMicros() };
        for (const c of takers) {
          if (c.closed) continue;
          c.line(line, 'chunk');
          c.forget(conn);
        }
      },
    };
  }
}
