// Raw HTTP/2 (RFC 9113) for the HBONE fuzz target: frames written byte by byte and header
// blocks in HPACK literals (RFC 7541 §6.2.2, no Huffman), so a test can send what no HTTP/2
// client library would: bad pseudo-headers, bytes no header may hold, frames on the wrong
// stream, bad lengths and flags. Plus fast-check arbitraries of such frame sequences.
import fc from 'fast-check';
import { mutatedBytes } from './mutate.js';

export const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');

export const FRAME = { DATA: 0, HEADERS: 1, PRIORITY: 2, RST_STREAM: 3, SETTINGS: 4, PUSH_PROMISE: 5, PING: 6, GOAWAY: 7, WINDOW_UPDATE: 8, CONTINUATION: 9 } as const;
export const FLAG = { END_STREAM: 0x1, ACK: 0x1, END_HEADERS: 0x4, PADDED: 0x8, PRIORITY: 0x20 } as const;

/** One frame: the 9-byte header (RFC 9113 §4.1) and the payload; `length` may lie. */
export function frame(type: number, flags: number, streamId: number, payload: Uint8Array, length = payload.length): Buffer {
  const h = Buffer.alloc(9);
  h.writeUIntBE(length & 0xffffff, 0, 3);
  h[3] = type & 0xff;
  h[4] = flags & 0xff;
  h.writeUInt32BE(streamId >>> 0, 5);
  return Buffer.concat([h, payload]);
}

/** An HPACK integer with an N-bit prefix (RFC 7541 §5.1). */
function hpackInt(v: number, prefixBits: number, firstByte = 0): number[] {
  const max = (1 << prefixBits) - 1;
  if (v < max) return [firstByte | v];
  const out = [firstByte | max];
  let rest = v - max;
  while (rest >= 128) {
    out.push((rest % 128) + 128);
    rest = Math.floor(rest / 128);
  }
  out.push(rest);
  return out;
}

/** A header block of literal fields without indexing, new names: any bytes in names and values. */
export function hpackLiterals(fields: readonly (readonly [Uint8Array | string, Uint8Array | string])[]): Buffer {
  const parts: Buffer[] = [];
  for (const [n, v] of fields) {
    const name = Buffer.from(n as string);
    const value = Buffer.from(v as string);
    parts.push(Buffer.from([0x00, ...hpackInt(name.length, 7)]), name, Buffer.from(hpackInt(value.length, 7)), value);
  }
  return Buffer.concat(parts);
}

export function settings(params: readonly (readonly [number, number])[], ack = false): Buffer {
  const p = Buffer.alloc(params.length * 6);
  params.forEach(([id, v], i) => {
    p.writeUInt16BE(id & 0xffff, i * 6);
    p.writeUInt32BE(v >>> 0, i * 6 + 2);
  });
  return frame(FRAME.SETTINGS, ack ? FLAG.ACK : 0, 0, p);
}

export function ping(opaque: Uint8Array, ack = false): Buffer {
  return frame(FRAME.PING, ack ? FLAG.ACK : 0, 0, opaque);
}

// ---- arbitraries ------------------------------------------------------------------------------

/** The header names that matter to an HBONE server, and some that a peer must never send. */
const NAMES = [':method', ':authority', ':path', ':scheme', ':status', ':protocol', ':bogus', 'forwarded', 'traceparent', 'baggage', 'content-length', 'host', 'connection', 'te', 'upgrade', 'x-forwarded-for', 'Forwarded', 'x-custom'];

export interface HeaderSeed {
  /** The valid request the mutations start from (`CONNECT` to an address of the pod). */
  connect: readonly (readonly [string, string])[];
  /** Authority values worth trying: other ports of the pod, mesh ports, foreign IPs. */
  authorities: readonly string[];
}

const bytesArb = fc.uint8Array({ maxLength: 24 });

/** A header list: the valid CONNECT with fields replaced, added, removed, reordered or duplicated. */
export function headerListArb(seed: HeaderSeed): fc.Arbitrary<(readonly [Uint8Array | string, Uint8Array | string])[]> {
  const value = fc.oneof(
    { weight: 3, arbitrary: fc.constantFrom<string>(...seed.authorities, 'CONNECT', 'GET', 'connect', 'for="10.1.0.7"', 'for=10.1.0.7', 'for="[fd00::1]"', '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01', '/', 'https') },
    fc.string({ maxLength: 24 }),
    bytesArb,
  );
  const name = fc.oneof({ weight: 4, arbitrary: fc.constantFrom(...NAMES) }, fc.string({ maxLength: 10 }), bytesArb);
  const edit = fc.oneof(
    fc.record({ op: fc.constant('set' as const), at: fc.nat(), value }),
    fc.record({ op: fc.constant('add' as const), at: fc.nat(), name, value }),
    fc.record({ op: fc.constant('delete' as const), at: fc.nat() }),
    fc.record({ op: fc.constant('swap' as const), at: fc.nat() }),
    fc.record({ op: fc.constant('duplicate' as const), at: fc.nat() }),
  );
  return fc.array(edit, { maxLength: 4 }).map((edits) => {
    const list: [Uint8Array | string, Uint8Array | string][] = seed.connect.map(([n, v]) => [n, v]);
    for (const e of edits) {
      const i = list.length === 0 ? 0 : e.at % list.length;
      if (e.op === 'add') list.splice(e.at % (list.length + 1), 0, [e.name, e.value]);
      else if (list.length === 0) continue;
      else if (e.op === 'set') list[i] = [list[i]![0], e.value];
      else if (e.op === 'delete') list.splice(i, 1);
      else if (e.op === 'swap') list.reverse();
      else list.splice(i, 0, list[i]!);
    }
    return list;
  });
}

const streamIdArb = fc.oneof({ weight: 6, arbitrary: fc.constantFrom(1, 3, 5) }, fc.constantFrom(0, 2, 0x7fffffff, 0xffffffff), fc.nat());

/** One frame, mostly well-formed and relevant (HEADERS of a CONNECT, DATA, RST_STREAM), some broken. */
export function frameArb(seed: HeaderSeed): fc.Arbitrary<Buffer> {
  const headers = headerListArb(seed);
  const valid = hpackLiterals(seed.connect);
  return fc.oneof(
    { weight: 6, arbitrary: fc.record({ id: streamIdArb, flags: fc.oneof({ weight: 4, arbitrary: fc.constant(FLAG.END_HEADERS) }, fc.nat(255)), h: headers }).map(({ id, flags, h }) => frame(FRAME.HEADERS, flags, id, hpackLiterals(h))) },
    { weight: 2, arbitrary: fc.record({ id: streamIdArb, flags: fc.nat(255), block: mutatedBytes([valid], 3) }).map(({ id, flags, block }) => frame(FRAME.HEADERS, flags, id, block)) },
    { weight: 3, arbitrary: fc.record({ id: streamIdArb, flags: fc.constantFrom(0, FLAG.END_STREAM, FLAG.PADDED, 0xff), data: fc.uint8Array({ maxLength: 64 }) }).map(({ id, flags, data }) => frame(FRAME.DATA, flags, id, data)) },
    { weight: 2, arbitrary: fc.record({ id: streamIdArb, code: fc.oneof(fc.nat(13), fc.nat()) }).map(({ id, code }) => frame(FRAME.RST_STREAM, 0, id, Buffer.from([code >>> 24, (code >>> 16) & 255, (code >>> 8) & 255, code & 255]))) },
    fc.record({ id: streamIdArb, inc: fc.oneof(fc.constantFrom(0, 1, 0x7fffffff, 0xffffffff), fc.nat()) }).map(({ id, inc }) => frame(FRAME.WINDOW_UPDATE, 0, id, Buffer.from([inc >>> 24, (inc >>> 16) & 255, (inc >>> 8) & 255, inc & 255]))),
    fc.record({ params: fc.array(fc.tuple(fc.oneof(fc.integer({ min: 1, max: 8 }), fc.nat(0xffff)), fc.oneof(fc.constantFrom(0, 1, 2, 16383, 16384, 0x7fffffff, 0x80000000, 0xffffffff), fc.nat())), { maxLength: 3 }), ack: fc.boolean() }).map(({ params, ack }) => settings(params, ack)),
    fc.record({ opaque: fc.uint8Array({ minLength: 0, maxLength: 12 }), ack: fc.boolean() }).map(({ opaque, ack }) => ping(opaque, ack)),
    fc.record({ id: streamIdArb, payload: fc.uint8Array({ maxLength: 8 }) }).map(({ id, payload }) => frame(FRAME.PRIORITY, 0, id, payload)),
    fc.record({ id: streamIdArb, flags: fc.nat(255), h: headers }).map(({ id, flags, h }) => frame(FRAME.CONTINUATION, flags, id, hpackLiterals(h))),
    fc.record({ id: streamIdArb, payload: fc.uint8Array({ maxLength: 16 }) }).map(({ id, payload }) => frame(FRAME.PUSH_PROMISE, FLAG.END_HEADERS, id, payload)),
    fc.record({ payload: fc.uint8Array({ maxLength: 16 }) }).map(({ payload }) => frame(FRAME.GOAWAY, 0, 0, payload)),
    fc.record({ type: fc.integer({ min: 10, max: 255 }), flags: fc.nat(255), id: streamIdArb, payload: fc.uint8Array({ maxLength: 16 }) }).map(({ type, flags, id, payload }) => frame(type, flags, id, payload)),
    // A header whose length lies (longer or shorter than the payload), and plain noise.
    fc.record({ type: fc.nat(9), id: streamIdArb, payload: fc.uint8Array({ maxLength: 16 }), length: fc.nat(0xffffff) }).map(({ type, id, payload, length }) => frame(type, 0, id, payload, length)),
    fc.uint8Array({ minLength: 1, maxLength: 32 }).map((b) => Buffer.from(b)),
  );
}
