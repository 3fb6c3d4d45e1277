// HTTP/1.1 message parsing with llhttp, the parser node:http itself runs, reached through
// Node's own binding (`_http_common`) without node:http's per-request objects. Strict mode:
// every smuggling shape llhttp knows (CL+TE, duplicate CL, TE not chunked-last, obs-fold,
// bare LF) is a parse error, never a lenient guess.
import { createRequire } from 'node:module';

/** A parse failure as llhttp reports it: `code` is llhttp's (HPE_HEADER_OVERFLOW, ...). */
export interface ParseFailure extends Error {
  code: string;
  reason?: string;
  bytesParsed?: number;
}

/** What llhttp tells about one message's head. `method` is set for requests, `status` for responses. */
export interface ParsedHead {
  versionMajor: number;
  versionMinor: number;
  /** Raw header pairs, flat: [name, value, name, value, ...], case as received. */
  headers: string[];
  method: string;
  url: string;
  status: number;
  statusMessage: string;
  upgrade: boolean;
  keepAlive: boolean;
}

export interface ParserEvents {
  /**
   * The head is complete. Return 0 to parse a body as the framing says, 1 to expect none (a
   * response to HEAD), 2 for none and stop here (a 101 / upgrade).
   */
  head(h: ParsedHead): number;
  body(chunk: Buffer): void;
  /** The message is complete; `trailers` are the chunked trailer fields, if any. */
  complete(trailers: string[] | undefined): void;
  /** The first byte of a message arrived (for the header timeout). */
  begin?(): void;
}

interface RawParser {
  initialize(type: number, resource: object, maxHeaderSize: number, lenient: number): void;
  execute(data: Buffer): number | ParseFailure | undefined;
  finish(): number | ParseFailure | undefined;
  close(): void;
  [callback: number]: unknown;
}

interface Binding {
  new (): RawParser;
  REQUEST: number;
  RESPONSE: number;
  kOnMessageBegin: number;
  kOnHeaders: number;
  kOnHeadersComplete: number;
  kOnBody: number;
  kOnMessageComplete: number;
  kLenientNone: number;
}

function load(): { HTTPParser: Binding; methods: string[] } {
  // `_http_common` is how node:http's server and client reach llhttp; it is present in every
  // Node from 12 to 24 (checked here on 24). If a future Node drops it, fail loudly at load.
  const m = createRequire(import.meta.url)('_http_common') as { HTTPParser?: Binding; methods?: string[] };
  if (typeof m.HTTPParser !== 'function' || !Array.isArray(m.methods) || typeof m.HTTPParser.kOnHeadersComplete !== 'number') {
    throw new Error(`this Node (${process.version}) does not expose llhttp through _http_common; the L7 engine needs Node 22 or 24`);
  }
  return { HTTPParser: m.HTTPParser, methods: m.methods };
}

const { HTTPParser, methods } = load();
const RESOURCE = {};

/**
 * One direction of one connection: requests (client side) or responses (upstream side).
 * Node's binding hands over headers in pieces when there are many (kOnHeaders) and for
 * trailers; they are gathered here exactly as node:http's parserOnHeaders does.
 */
export class Http1Parser {
  readonly #p: RawParser;
  #pending: string[] = [];
  #url = '';
  #closed = false;
  #executing = false;

  constructor(kind: 'request' | 'response', maxHeaderSize: number, ev: ParserEvents) {
    const p = new HTTPParser();
    p.initialize(kind === 'request' ? HTTPParser.REQUEST : HTTPParser.RESPONSE, RESOURCE, maxHeaderSize, HTTPParser.kLenientNone);
    // Each callback is a C++ to JS call per message; the binding skips those left unset.
    if (ev.begin) p[HTTPParser.kOnMessageBegin] = ev.begin;
    p[HTTPParser.kOnHeaders] = (headers: string[], url: string) => {
      for (let i = 0; i < headers.length; i++) this.#pending.push(headers[i]!);
      this.#url += url;
    };
    p[HTTPParser.kOnHeadersComplete] = (
      versionMajor: number,
      versionMinor: number,
      headers: string[] | undefined,
      method: number | undefined,
      url: string | undefined,
      status: number | undefined,
      statusMessage: string | undefined,
      upgrade: boolean,
      keepAlive: boolean,
    ): number => {
      if (headers === undefined) {
        headers = this.#pending;
        this.#pending = [];
      } else if (this.#pending.length > 0) {
        headers = this.#pending.concat(headers);
        this.#pending = [];
      }
      if (url === undefined) {
        url = this.#url;
        this.#url = '';
      }
      return ev.head({
        versionMajor,
        versionMinor,
        headers,
        method: method === undefined ? '' : (methods[method] ?? ''),
        url,
        status: status ?? 0,
        statusMessage: statusMessage ?? '',
        upgrade,
        keepAlive,
      });
    };
    p[HTTPParser.kOnBody] = ev.body;
    p[HTTPParser.kOnMessageComplete] = () => {
      let trailers: string[] | undefined;
      if (this.#pending.length > 0) {
        trailers = this.#pending;
        this.#pending = [];
      }
      this.#url = '';
      ev.complete(trailers);
    };
    this.#p = p;
  }

  /** Parses a chunk: the bytes consumed (fewer than given after an upgrade), or the failure. */
  execute(data: Buffer): number | ParseFailure {
    if (this.#closed) return 0;
    this.#executing = true;
    let r;
    try {
      r = this.#p.execute(data);
    } finally {
      this.#executing = false;
      // Closed from a callback: the native parser is freed only now that llhttp has returned.
      if (this.#closed) this.#p.close();
    }
    return r === undefined ? data.length : r;
  }

  /** The peer sent its FIN: completes a close-delimited body, or fails a message cut short. */
  finish(): ParseFailure | undefined {
    if (this.#closed) return undefined;
    const r = this.#p.finish();
    return typeof r === 'object' ? r : undefined;
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    if (!this.#executing) this.#p.close();
  }
}

export function isParseFailure(r: number | ParseFailure): r is ParseFailure {
  return typeof r !== 'number';
}
