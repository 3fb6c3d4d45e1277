// The client side of a capture: reads /debug/capture streams (one per node), prints records as
// a table or JSON lines, writes plaintext lines into a pcap, reports drops, stops at --count.
import { StringDecoder } from 'node:string_decoder';
import type { PcapWriter } from './pcap.js';
import type { StreamLine } from './record.js';
import { tableHeader, tableRow } from './table.js';

export interface SessionOptions {
  json: boolean;
  /** Stop after this many records (undefined: follow). */
  count?: number;
  pcap?: PcapWriter;
  /** Several nodes: the table gets a NODE column. */
  multiNode: boolean;
  out: (s: string) => void;
  err: (s: string) => void;
  /** Called once when --count records have been printed. */
  onDone: () => void;
}

export class CaptureSession {
  readonly #o: SessionOptions;
  #printed = 0;
  #header = false;
  #done = false;
  /** Streams by `<source>/<conn>`, renumbered into one pcap. */
  readonly #conns = new Map<string, number>();
  #nextConn = 1;
  readonly #hello = new Set<string>();

  constructor(o: SessionOptions) {
    this.#o = o;
  }

  get printed(): number {
    return this.#printed;
  }

  /** Sources whose stream has started (their hello line arrived). */
  get started(): number {
    return this.#hello.size;
  }

  /** One line of the stream from `source` (a node name or address); returns false when it is not JSON. */
  line(source: string, text: string): boolean {
    if (this.#done || !text.trim()) return true;
    let l: StreamLine;
    try {
      l = JSON.parse(text) as StreamLine;
    } catch {
      this.#o.err(`warning: ${source}: a line of the capture stream is not JSON: ${text.slice(0, 80)}\n`);
      return false;
    }
    const pcap = this.#o.pcap;
    switch (l.type) {
      case 'hello':
        this.#hello.add(source);
        this.#o.err(`capturing on node ${l.node}${l.pcap ? ' (records and plaintext)' : ''}${Object.keys(l.filter).length ? `, filter ${new URLSearchParams(l.filter).toString()}` : ''}\n`);
        return true;
      case 'replayed':
        return true;
      case 'dropped':
        this.#o.err(`warning: ${source}: the agent dropped ${l.flows} record(s) and ${l.chunks} plaintext chunk(s): this capture reads too slowly\n`);
        return true;
      case 'flow':
        this.#flow(l.flow);
        return true;
      case 'open':
        if (pcap) {
          const id = this.#nextConn++;
          this.#conns.set(`${source}/${l.conn}`, id);
          pcap.open(id, l.src, l.dst, l.t);
        }
        return true;
      case 'data': {
        const id = this.#conns.get(`${source}/${l.conn}`);
        if (pcap && id !== undefined) pcap.data(id, l.dir, l.seq, Buffer.from(l.data, 'base64'), l.t);
        return true;
      }
      case 'end': {
        const id = this.#conns.get(`${source}/${l.conn}`);
        if (pcap && id !== undefined) pcap.end(id, l.dir, l.seq, l.t);
        return true;
      }
      case 'close': {
        const k = `${source}/${l.conn}`;
        const id = this.#conns.get(k);
        if (pcap && id !== undefined) pcap.close(id, l.t);
        this.#conns.delete(k);
        return true;
      }
      default:
        return true;
    }
  }

  #flow(r: Extract<StreamLine, { type: 'flow' }>['flow']): void {
    if (this.#o.json) this.#o.out(JSON.stringify(r) + '\n');
    else {
      if (!this.#header) {
        this.#header = true;
        this.#o.out(tableHeader(this.#o.multiNode) + '\n');
      }
      this.#o.out(tableRow(r, this.#o.multiNode) + '\n');
    }
    this.#printed++;
    if (this.#o.count !== undefined && this.#printed >= this.#o.count) {
      this.#done = true;
      this.#o.onDone();
    }
  }
}

/** Splits a byte stream into lines (the NDJSON framing). */
export function lineSplitter(onLine: (line: string) => void): (chunk: Buffer | string) => void {
  let buf = '';
  const dec = new StringDecoder('utf8');
  return (chunk) => {
    buf += typeof chunk === 'string' ? chunk : dec.write(chunk);
    let i: number;
    while ((i = buf.indexOf('\n')) >= 0) {
      onLine(buf.slice(0, i));
      buf = buf.slice(i + 1);
    }
  };
}
