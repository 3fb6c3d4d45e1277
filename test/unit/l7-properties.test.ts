// Properties of the L7 engine, fed through an in-process socket pair so every piece arrives as
// its own read: any split of a valid pipelined byte stream gives the same responses in the same
// order, and arbitrary or mutated bytes never throw out of the engine, always end with the
// connection closed, and leave it serving the next client.
import { duplexPair, type Duplex } from 'node:stream';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HttpEngine } from '../../src/l7/index.js';
import { H2_PREFACE } from '../../src/l7/h2.js';
import { fuzzBudget, fuzzParams, settle, watchProcess, type ProcessWatch } from '../helpers/fuzz.js';
import { mutatedBytes } from '../helpers/mutate.js';
import { app, dial, type App } from '../helpers/l7.js';

let upstream: App;
let engine: HttpEngine;
let watch: ProcessWatch;

beforeAll(async () => {
  upstream = await app((req, res) => {
    let body = '';
    req.setEncoding('latin1');
    req.on('data', (c: string) => (body += c));
    req.on('end', () => res.end(`<<${req.method} ${req.url} ${body.length}:${body}>>`));
  });
  engine = new HttpEngine({ headerTimeoutMs: 500, sweepMs: 20, maxHeaderBytes: 2048 });
  watch = watchProcess();
});
afterAll(async () => {
  watch.dispose();
  engine.close();
  await upstream.close();
});

const route = () => ({ upstream: 'echo', open: dial(upstream.port) });

interface Req {
  method: 'GET' | 'DELETE' | 'POST' | 'PUT';
  path: string;
  body: string;
  /** Chunk sizes for a chunked body; undefined: Content-Length. */
  chunks: number[] | undefined;
}

const reqArb: fc.Arbitrary<Req> = fc
  .record({
    method: fc.constantFrom('GET' as const, 'DELETE' as const, 'POST' as const, 'PUT' as const),
    path: fc.stringMatching(/^\/[a-z0-9]{0,8}$/),
    body: fc.stringMatching(/^[a-z]{0,40}$/),
    chunked: fc.boolean(),
    cuts: fc.array(fc.integer({ min: 1, max: 12 }), { maxLength: 6 }),
  })
  .map(({ method, path, body, chunked, cuts }) => {
    const hasBody = method === 'POST' || method === 'PUT';
    return { method, path, body: hasBody ? body : '', chunks: hasBody && chunked ? cuts : undefined };
  });

function encode(r: Req): string {
  let head = `${r.method} ${r.path} HTTP/1.1\r\nHost: fuzz\r\n`;
  if (r.method !== 'POST' && r.method !== 'PUT') return `${head}\r\n`;
  if (!r.chunks) return `${head}Content-Length: ${r.body.length}\r\n\r\n${r.body}`;
  head += 'Transfer-Encoding: chunked\r\n\r\n';
  let rest = r.body;
  for (const n of r.chunks) {
    if (!rest) break;
    const c = rest.slice(0, n);
    rest = rest.slice(n);
    head += `${c.length.toString(16)}\r\n${c}\r\n`;
  }
  if (rest) head += `${rest.length.toString(16)}\r\n${rest}\r\n`;
  return `${head}0\r\n\r\n`;
}

/** One client connection over a socket pair: writes the pieces one read at a time, returns all it got. */
async function converse(pieces: Buffer[], o: { untilMarkers?: number; end?: boolean } = {}): Promise<{ got: string; served: Promise<void> }> {
  const [ours, theirs]: [Duplex, Duplex] = duplexPair();
  const served = engine.serve(theirs, { route });
  let got = '';
  const markers = () => got.split('>>').length - 1;
  const done = new Promise<void>((resolve) => {
    ours.on('data', (d: Buffer) => {
      got += d.toString('latin1');
      if (o.untilMarkers !== undefined && markers() >= o.untilMarkers) resolve();
    });
    ours.on('end', () => resolve());
    ours.on('close', () => resolve());
    ours.on('error', () => resolve());
  });
  for (const p of pieces) {
    ours.write(p);
    await new Promise((r) => setImmediate(r));
  }
  if (o.end) ours.end();
  await Promise.race([done, new Promise((r) => setTimeout(r, 5000))]);
  ours.destroy();
  return { got, served };
}

function split(bytes: Buffer, cuts: number[]): Buffer[] {
  const at = [...new Set(cuts.map((c) => c % (bytes.length + 1)))].sort((a, b) => a - b);
  const out: Buffer[] = [];
  let prev = 0;
  for (const c of [...at, bytes.length]) {
    if (c > prev) out.push(bytes.subarray(prev, c));
    prev = c;
  }
  return out;
}

describe('L7 engine, properties', () => {
  const b1 = fuzzBudget(200, Math.min(150, Math.max(20, Math.floor(fuzzBudget(1).runs / 4))));
  it(
    'gives the same responses, in order, however a valid pipelined stream is split into reads',
    async () => {
      await fc.assert(
        fc.asyncProperty(fc.array(reqArb, { minLength: 1, maxLength: 5 }), fc.array(fc.nat(), { maxLength: 12 }), async (reqs, cuts) => {
          const bytes = Buffer.from(reqs.map(encode).join(''), 'latin1');
          const { got } = await converse(split(bytes, cuts), { untilMarkers: reqs.length });
          const bodies = [...got.matchAll(/<<([\s\S]*?)>>/g)].map((m) => m[1]);
          expect(bodies).toEqual(reqs.map((r) => `${r.method} ${r.path} ${r.body.length}:${r.body}`));
          expect([...got.matchAll(/HTTP\/1\.1 (\d{3}) /g)].map((m) => m[1])).toEqual(reqs.map(() => '200'));
          watch.check();
        }),
        fuzzParams(b1),
      );
    },
    b1.testTimeoutMs,
  );

  const seeds = [
    'GET / HTTP/1.1\r\nHost: a\r\n\r\n',
    'POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello',
    'PUT /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nx-t: 1\r\n\r\n',
    'GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n',
    'GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nok',
    // The HTTP/2 preface, a SETTINGS frame and a HEADERS frame's start: the HTTP/2 side's turn.
    'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00\x00\x00\x10\x01\x05\x00\x00\x00\x01\x82\x84\x86',
  ].map((s) => Uint8Array.from(Buffer.from(s, 'latin1')));
  const input = fc.oneof({ weight: 3, arbitrary: mutatedBytes(seeds, 6) }, { weight: 1, arbitrary: fc.uint8Array({ maxLength: 300 }) });
  const b2 = fuzzBudget(200);
  it(
    'never throws out of the engine on arbitrary bytes: every answer is a status line, the connection always ends',
    async () => {
      await fc.assert(
        fc.asyncProperty(input, fc.array(fc.nat(), { maxLength: 8 }), async (bytes, cuts) => {
          const { got, served } = await converse(split(Buffer.from(bytes), cuts), { end: true });
          // serve() resolves once the connection is gone, never rejects.
          await expect(Promise.race([served.then(() => 'ended'), new Promise((r) => setTimeout(() => r('stuck'), 3000))])).resolves.toBe('ended');
          // HTTP/1.1 answers are status lines (an HTTP/2 connection answers in frames).
          if (got.length > 0 && !Buffer.from(bytes).subarray(0, 24).equals(H2_PREFACE)) expect(got).toMatch(/^HTTP\/1\.1 [1-5]\d\d /);
          watch.check();
        }),
        fuzzParams<[Uint8Array, number[]]>(b2, [[Uint8Array.from(Buffer.from('GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 9999\r\n\r\nx')), [5, 17]]]),
      );
      // Whatever came before, the engine still serves a good client, and holds no session.
      const { got } = await converse([Buffer.from('GET /after HTTP/1.1\r\nHost: a\r\n\r\n')], { untilMarkers: 1 });
      expect(got).toContain('<<GET /after 0:>>');
      expect(await settle(() => engine.stats().sessions === 0)).toBe(true);
    },
    b2.testTimeoutMs,
  );
});
