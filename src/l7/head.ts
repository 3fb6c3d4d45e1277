// Writing HTTP/1.1 heads: the request the upstream sees and the response the client sees,
// with hop-by-hop fields dropped (RFC 9110 §7.6.1) and the framing the engine re-applies.
import { STATUS_CODES } from 'node:http';

/** The framing of a body as it crosses the engine. */
export type Framing = 'none' | 'length' | 'chunked' | 'close';

/**
 * Fields that describe one hop, never forwarded: the engine decides connection reuse and
 * framing for each side on its own. `te` is kept only as `te: trailers` (gRPC needs it).
 */
const HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade', 'te']);

const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
const BAD_VALUE = /[\r\n\0]/;

/** What a head's fields say about framing and the connection, read in one pass. */
export interface HeadInfo {
  contentLength: boolean;
  chunked: boolean;
  /** Lowercased tokens of the Connection field(s). */
  connectionTokens: string[] | undefined;
  /** `Keep-Alive: timeout=N` (seconds), from a response. */
  keepAliveTimeout: number | undefined;
  /** Index of the Host field in the pairs; -2 when it appears twice. */
  host: number;
  expectContinue: boolean;
}

function isHopName(lower: string): boolean {
  return HOP.has(lower);
}

/** Reads the fields the engine acts on; names are compared case-insensitively. */
export function inspect(h: readonly string[]): HeadInfo {
  const info: HeadInfo = { contentLength: false, chunked: false, connectionTokens: undefined, keepAliveTimeout: undefined, host: -1, expectContinue: false };
  for (let i = 0; i < h.length; i += 2) {
    const name = h[i]!;
    // Cheap pre-filter on length: every field acted on here has one of these lengths.
    const n = name.length;
    if (n !== 4 && n !== 6 && n !== 10 && n !== 14 && n !== 17) continue;
    const lower = name.toLowerCase();
    if (lower === 'host') info.host = info.host === -1 ? i : -2;
    else if (lower === 'content-length') info.contentLength = true;
    else if (lower === 'transfer-encoding') info.chunked = true;
    else if (lower === 'connection') {
      // `keep-alive`, `close` and `upgrade` name no field that is not dropped anyway.
      for (const t of h[i + 1]!.toLowerCase().split(',')) {
        const tok = t.trim();
        if (tok !== 'keep-alive' && tok !== 'close' && tok !== 'upgrade' && tok !== '') (info.connectionTokens ??= []).push(tok);
      }
    }
    else if (lower === 'keep-alive') {
      const m = /timeout\s*=\s*(\d+)/i.exec(h[i + 1]!);
      if (m) info.keepAliveTimeout = Number(m[1]);
    } else if (lower === 'expect') info.expectContinue = h[i + 1]!.trim().toLowerCase() === '100-continue';
  }
  return info;
}

/**
 * Appends the end-to-end fields of `h` to `out`: hop-by-hop ones and those the Connection field
 * names are dropped; `keepUpgrade` keeps Upgrade and adds `connection: upgrade` (a WebSocket
 * handshake); `keepTe` keeps Transfer-Encoding (the body stays chunked). `check` validates
 * names and values that did not come from llhttp.
 */
function fields(h: readonly string[], info: HeadInfo, keepUpgrade: boolean, keepTe: boolean, check: boolean): string {
  let out = '';
  const named = info.connectionTokens;
  for (let i = 0; i < h.length; i += 2) {
    const name = h[i]!;
    const value = h[i + 1]!;
    if (check && (!TOKEN.test(name) || BAD_VALUE.test(value))) throw new TypeError(`invalid header field ${JSON.stringify(name)}`);
    const n = name.length;
    if (n === 2 || n === 7 || n === 10 || n === 16 || n === 17) {
      const lower = name.toLowerCase();
      if (isHopName(lower)) {
        if (lower === 'upgrade' && keepUpgrade) out += `${name}: ${value}\r\n`;
        else if (lower === 'te' && value.trim().toLowerCase() === 'trailers') out += `${name}: ${value}\r\n`;
        else if (lower === 'transfer-encoding' && keepTe) out += `${name}: ${value}\r\n`;
        continue;
      }
    }
    if (named !== undefined && named.includes(name.toLowerCase())) continue;
    out += `${name}: ${value}\r\n`;
  }
  if (keepUpgrade) out += 'connection: upgrade\r\n';
  return out;
}

/**
 * The request head for the upstream. Content-Length and Transfer-Encoding stay as the client
 * sent them (the body keeps its framing; chunks are re-chunked one to one).
 */
export function requestHead(method: string, path: string, h: readonly string[], info: HeadInfo, upgrade: boolean, check: boolean): string {
  if (check && (path.length === 0 || /[\s\0]/.test(path))) throw new TypeError(`invalid request target ${JSON.stringify(path)}`);
  return `${method} ${path} HTTP/1.1\r\n${fields(h, info, upgrade, true, check)}\r\n`;
}

/**
 * The response head for the client. `framing` is what the engine sends: `chunked` adds the
 * field when the upstream's body was close-delimited; `close` ends the client connection.
 */
export function responseHead(status: number, message: string, h: readonly string[], info: HeadInfo, o: { framing: Framing; upstreamChunked: boolean; close: boolean; keepAlive10: boolean; upgrade: boolean; check: boolean }): string {
  let head = `HTTP/1.1 ${status} ${message || STATUS_CODES[status] || 'Unknown'}\r\n${fields(h, info, o.upgrade, o.framing !== 'close', o.check)}`;
  if (o.framing === 'chunked' && !o.upstreamChunked) head += 'transfer-encoding: chunked\r\n';
  if (o.close) head += 'connection: close\r\n';
  else if (o.keepAlive10) head += 'connection: keep-alive\r\n';
  return `${head}\r\n`;
}

/**
 * How a response body goes to the client: none (HEAD, 204, 304, 101), as it came (length or
 * chunked), or re-framed: a close-delimited upstream body goes chunked to an HTTP/1.1 client,
 * and an HTTP/1.0 client, which knows no chunks, gets the body delimited by a close.
 */
export function responseFraming(method: string, status: number, info: HeadInfo, http10: boolean): { framing: Framing; closeDelimited: boolean } {
  if (method === 'HEAD' || status === 204 || status === 304 || status === 101) return { framing: 'none', closeDelimited: false };
  if (info.chunked) return { framing: http10 ? 'close' : 'chunked', closeDelimited: false };
  if (info.contentLength) return { framing: 'length', closeDelimited: false };
  return { framing: http10 ? 'close' : 'chunked', closeDelimited: true };
}

/** A response the engine makes itself (errors, and the route hook's direct answers). */
export function localResponse(status: number, headers: readonly string[], body: Buffer, close: boolean): Buffer {
  let head = `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? 'Unknown'}\r\n`;
  let type = false;
  for (let i = 0; i < headers.length; i += 2) {
    const name = headers[i]!;
    const value = headers[i + 1]!;
    if (!TOKEN.test(name) || BAD_VALUE.test(value)) throw new TypeError(`invalid header field ${JSON.stringify(name)}`);
    const lower = name.toLowerCase();
    if (isHopName(lower) || lower === 'content-length') continue;
    if (lower === 'content-type') type = true;
    head += `${name}: ${value}\r\n`;
  }
  if (body.length > 0 && !type) head += 'content-type: text/plain\r\n';
  head += `content-length: ${body.length}\r\n`;
  if (close) head += 'connection: close\r\n';
  return Buffer.concat([Buffer.from(`${head}\r\n`, 'latin1'), body]);
}

/** `h` with its Host field set to `authority` (the first replaced, or one added). */
export function withHost(h: readonly string[], authority: string): string[] {
  const out = [...h];
  for (let i = 0; i < out.length; i += 2) {
    if (out[i]!.toLowerCase() === 'host') {
      out[i + 1] = authority;
      return out;
    }
  }
  out.push('host', authority);
  return out;
}

/** The chunk-size line of one re-chunked body piece. */
export function chunkHeader(n: number): string {
  return `${n.toString(16)}\r\n`;
}

/** The last chunk and its trailer section. */
export function lastChunk(trailers: readonly string[] | undefined): string {
  if (!trailers) return '0\r\n\r\n';
  let out = '0\r\n';
  for (let i = 0; i < trailers.length; i += 2) out += `${trailers[i]}: ${trailers[i + 1]}\r\n`;
  return `${out}\r\n`;
}

/** Flattens `[[name, value], ...]` or a record into raw pairs. */
export function flatHeaders(h: readonly string[] | Readonly<Record<string, string>> | ReadonlyArray<readonly [string, string]> | undefined): string[] {
  if (!h) return [];
  if (Array.isArray(h)) {
    if (h.length === 0) return [];
    if (typeof h[0] === 'string') return [...(h as readonly string[])];
    return (h as ReadonlyArray<readonly [string, string]>).flatMap(([k, v]) => [k, v]);
  }
  return Object.entries(h as Record<string, string>).flatMap(([k, v]) => [k, v]);
}
