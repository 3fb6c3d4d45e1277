// Fuzz: HBONE CONNECT requests against a live 15008 server (HboneServer on loopback, real mTLS
// with test-CA SPIFFE certificates, apps on real ports). Three kinds of input: requests through
// Node's HTTP/2 client (methods, authorities, extra headers; resets, half-closes, torn-down
// sessions), raw HTTP/2 frame sequences written byte by byte over mTLS (what no client library
// sends: bad pseudo-headers, bytes no header may hold, lying lengths, frames on the wrong
// stream) under a mesh, foreign or missing certificate, and plain TCP noise. After every input
// the server still tunnels a good CONNECT byte-exact, no error reaches the process, a denied or
// failed authorization never reaches its app, and nothing is left open at the end.
import { randomBytes } from 'node:crypto';
import { connect as h2connect, type ClientHttp2Session, type ClientHttp2Stream } from 'node:http2';
import { connect as tcpConnect, createServer, Socket, type AddressInfo } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import fc from 'fast-check';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connectFd, HbonePool, HboneServer, type HboneCredentials } from '../../src/proxy/index.js';
import { DENY_POLICY_HEADER } from '../../src/proxy/hbone/headers.js';
import { startApp, type TestApp } from '../helpers/app.js';
import { createTestCa, type TestCert } from '../helpers/certs.js';
import { fuzzBudget, fuzzParams, openFds, progress, settle, watchProcess, type ProcessWatch } from '../helpers/fuzz.js';
import { frameArb, PREFACE, settings, type HeaderSeed } from '../helpers/h2-frames.js';
import { mutatedBytes } from '../helpers/mutate.js';

const TD = 'cluster.local';
const SERVER_ID = `spiffe://${TD}/ns/default/sa/server`;
const CLIENT_ID = `spiffe://${TD}/ns/default/sa/client`;
const log = pino({ level: 'silent' });

let rootPem: string;
let serverCert: TestCert;
let clientCert: TestCert;
const certs: Record<'foreign' | 'stranger', TestCert> = {} as never;
let echo: TestApp;
/** Apps behind the denied and the failing authorization: they must never see a connection. */
let denied: TestApp;
let failing: TestApp;
let reachedForbidden = 0;
let closedPort: number;
let server: HboneServer;
let serverPort: number;
let pool: HbonePool;
let watch: ProcessWatch;

beforeAll(async () => {
  watch = watchProcess();
  const mesh = await createTestCa({ name: 'mesh root', intermediate: true });
  rootPem = mesh.rootPem;
  serverCert = await mesh.issue(SERVER_ID);
  clientCert = await mesh.issue(CLIENT_ID);
  certs.foreign = await mesh.issue('spiffe://other.domain/ns/default/sa/client');
  certs.stranger = await (await createTestCa({ name: 'another root' })).issue(CLIENT_ID);
  echo = await startApp((s) => s.pipe(s), { allowHalfOpen: true });
  denied = await startApp((s) => {
    reachedForbidden++;
    s.destroy();
  });
  failing = await startApp((s) => {
    reachedForbidden++;
    s.destroy();
  });
  const probe = createServer();
  await new Promise<void>((r) => probe.listen(0, '127.0.0.1', r));
  closedPort = (probe.address() as AddressInfo).port;
  await new Promise((r) => probe.close(r));

  server = new HboneServer({
    credentials: (): HboneCredentials => serverCert,
    trustDomain: TD,
    localAddresses: ['127.0.0.1'],
    authorize: (r) => {
      if (r.target.port === denied.port) return { allow: false, reason: 'denied by the fuzz policy', policy: 'default/deny-fuzz' };
      if (r.target.port === failing.port) throw new Error('authorization bug (simulated)');
      return { allow: true };
    },
    connectUpstream: (r) => connectFd(new Socket({ allowHalfOpen: true }), { ip: '127.0.0.1', port: r.target.port }, 2000),
    log,
  });
  serverPort = (await server.listen({ host: '127.0.0.1', port: 0 })).port;
  pool = new HbonePool({ log, connectTimeoutMs: 3000 });
});

afterAll(async () => {
  await pool?.close();
  await server?.close();
  for (const a of [echo, denied, failing]) await a?.close();
  watch?.dispose();
});

function collect(s: NodeJS.ReadableStream & { once(e: string, f: (...a: unknown[]) => void): unknown }, ms: number): Promise<Buffer | 'error' | 'timeout'> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    const t = setTimeout(() => resolve('timeout'), ms);
    s.on('data', (c: Buffer) => chunks.push(c));
    s.once('end', () => {
      clearTimeout(t);
      resolve(Buffer.concat(chunks));
    });
    s.once('error', () => {
      clearTimeout(t);
      resolve('error');
    });
  });
}

/** The positive twin of every case: a good CONNECT through the real client pool, byte-exact. */
async function goodConnect(): Promise<void> {
  const token = randomBytes(16);
  const stream = await pool.connect({ source: { identity: CLIENT_ID, ...clientCert }, destIdentity: SERVER_ID, destAddr: { ip: '127.0.0.1', port: serverPort }, target: { ip: '127.0.0.1', port: echo.port }, forwardedFor: '10.1.0.7' });
  const got = collect(stream, 5000);
  stream.end(token);
  const r = await got;
  expect(Buffer.isBuffer(r) ? r.toString('hex') : r, 'a good CONNECT after the input').toBe(token.toString('hex'));
}

// ---- inputs through Node's HTTP/2 client ---------------------------------------------------

type Target = 'echo' | 'denied' | 'failing' | 'closed' | 'mesh' | 'foreign' | 'v6' | 'other';
const TARGETS: Target[] = ['echo', 'denied', 'failing', 'closed', 'mesh', 'foreign', 'v6'];
/** What the server answers a CONNECT with no extra headers, by target. */
const EXPECTED: Record<Exclude<Target, 'other'>, number> = { echo: 200, denied: 401, failing: 500, closed: 503, mesh: 400, foreign: 400, v6: 400 };

function authorityOf(t: Target, other: string): string {
  switch (t) {
    case 'echo':
      return `127.0.0.1:${echo.port}`;
    case 'denied':
      return `127.0.0.1:${denied.port}`;
    case 'failing':
      return `127.0.0.1:${failing.port}`;
    case 'closed':
      return `127.0.0.1:${closedPort}`;
    case 'mesh':
      return '127.0.0.1:15008';
    case 'foreign':
      return `10.9.9.9:${echo.port}`;
    case 'v6':
      return `[::1]:${echo.port}`;
    default:
      return other;
  }
}

interface ClientCase {
  kind: 'client';
  method: string;
  target: Target;
  other: string;
  extra: [string, string][];
  action: 'echo' | 'wait' | 'rst-now' | 'rst-after-data' | 'end-now' | 'destroy-session';
  rstCode: number;
  data: Uint8Array;
}

const clientCaseArb: fc.Arbitrary<ClientCase> = fc.record({
  kind: fc.constant('client' as const),
  method: fc.oneof({ weight: 6, arbitrary: fc.constant('CONNECT') }, fc.constantFrom('GET', 'POST', 'connect', 'PRI'), fc.stringMatching(/^[A-Z]{1,8}$/)),
  target: fc.oneof({ weight: 8, arbitrary: fc.constantFrom(...TARGETS) }, fc.constant<Target>('other')),
  other: fc.oneof(
    fc.constantFrom('127.0.0.1', '127.0.0.1:', ':80', '127.0.0.1:0', '127.0.0.1:65536', '127.0.0.1:99999999999', '127.0.0.01:80', 'localhost:80', '[::1]', '[]:80', '127.0.0.1:80:80', '1.2.3.4:80', ' 127.0.0.1:80', '127.0.0.1: 80'),
    fc.string({ maxLength: 24 }),
  ),
  extra: fc.array(
    fc.tuple(
      fc.oneof(fc.constantFrom('forwarded', 'traceparent', 'baggage', 'x-forwarded-for', 'content-length', 'x-custom', 'te', 'host'), fc.stringMatching(/^[a-z][a-z0-9-]{0,12}$/)),
      fc.oneof(fc.constantFrom('for="10.1.0.7"', 'for=10.1.0.7', 'for="[fd00::1]:80"', 'for=unknown', '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01', '00-zz-zz-01', 'trailers', '0', '-1'), fc.string({ maxLength: 40 })),
    ),
    { maxLength: 3 },
  ),
  action: fc.constantFrom('echo', 'echo', 'wait', 'rst-now', 'rst-after-data', 'end-now', 'destroy-session'),
  rstCode: fc.oneof(fc.nat(13), fc.nat()),
  data: fc.uint8Array({ minLength: 1, maxLength: 256 }),
});

let session: ClientHttp2Session | undefined;

async function clientSession(): Promise<ClientHttp2Session> {
  if (session && !session.closed && !session.destroyed) return session;
  const tls = tlsConnect({ host: '127.0.0.1', port: serverPort, cert: clientCert.certChainPem, key: clientCert.keyPem, ca: rootPem, ALPNProtocols: ['h2'], checkServerIdentity: () => undefined });
  tls.on('error', () => {});
  await new Promise((r, j) => tls.once('secureConnect', r).once('error', j));
  const s = h2connect(`https://127.0.0.1:${serverPort}`, { createConnection: () => tls });
  s.on('error', () => {});
  session = s;
  return s;
}

const seen = { answered: {} as Record<string, number>, clientRefused: 0, noAnswer: 0, raw: 0, rawLingering: 0, tcp: 0 };

async function runClientCase(c: ClientCase): Promise<void> {
  const s = await clientSession();
  const authority = authorityOf(c.target, c.other);
  const headers: Record<string, string> = { ':method': c.method, ':authority': authority };
  for (const [k, v] of c.extra) headers[k] = v;
  let st: ClientHttp2Stream;
  try {
    st = s.request(headers, { endStream: false });
  } catch {
    // Node's client refuses to send it (an invalid header, a CONNECT with :path): nothing reached the server.
    seen.clientRefused++;
    return;
  }
  st.on('error', () => {});
  if (c.action === 'destroy-session') {
    s.destroy();
    return;
  }
  if (c.action === 'rst-now') {
    st.close(c.rstCode % 14);
    return;
  }
  if (c.action === 'end-now') {
    st.end(c.data);
    return;
  }
  const res = await new Promise<Record<string, unknown> | 'closed' | 'timeout'>((resolve) => {
    const t = setTimeout(() => resolve('timeout'), 5000);
    st.once('response', (h) => {
      clearTimeout(t);
      resolve(h as Record<string, unknown>);
    });
    st.once('close', () => {
      clearTimeout(t);
      resolve('closed');
    });
  });
  const known = c.target !== 'other' && c.extra.length === 0 && c.method === 'CONNECT' ? EXPECTED[c.target] : c.extra.length === 0 && c.method !== 'CONNECT' ? 400 : undefined;
  if (typeof res === 'object') {
    const status = Number(res[':status']);
    seen.answered[status] = (seen.answered[status] ?? 0) + 1;
    expect([200, 400, 401, 500, 503], `status for ${c.method} ${authority}`).toContain(status);
    if (known !== undefined) expect(status, `status for ${c.method} ${authority}`).toBe(known);
    if (status === 401) expect(res[DENY_POLICY_HEADER]).toBe('default/deny-fuzz');
    if (status === 200 && c.action === 'echo' && c.target === 'echo') {
      const got = collect(st, 5000);
      st.end(c.data);
      const r = await got;
      expect(Buffer.isBuffer(r) ? r.toString('hex') : r, 'the tunnel echoes').toBe(Buffer.from(c.data).toString('hex'));
      return;
    }
  } else {
    seen.noAnswer++;
    if (known !== undefined) expect(res, `an answer to ${c.method} ${authority}`).not.toBe('timeout');
  }
  if (c.action === 'rst-after-data') st.write(c.data);
  if (!st.closed) st.close(c.action === 'rst-after-data' ? c.rstCode % 14 : 0);
}

// ---- raw frames over mTLS, and TCP noise -----------------------------------------------------

interface RawCase {
  kind: 'raw';
  cert: 'mesh' | 'foreign' | 'stranger' | 'none';
  preface: Uint8Array;
  settings: Buffer;
  frames: Buffer[];
}
interface TcpCase {
  kind: 'tcp';
  bytes: Uint8Array;
}

function rawCaseArb(): fc.Arbitrary<RawCase> {
  const seed: HeaderSeed = {
    connect: [
      [':method', 'CONNECT'],
      [':authority', authorityOf('echo', '')],
    ],
    authorities: TARGETS.map((t) => authorityOf(t, '')),
  };
  return fc.record({
    kind: fc.constant('raw' as const),
    cert: fc.oneof({ weight: 8, arbitrary: fc.constant('mesh' as const) }, fc.constantFrom('foreign' as const, 'stranger' as const, 'none' as const)),
    preface: fc.oneof({ weight: 12, arbitrary: fc.constant(new Uint8Array(PREFACE)) }, mutatedBytes([PREFACE], 2)),
    settings: fc.oneof({ weight: 4, arbitrary: fc.constant(settings([])) }, fc.constant(settings([[3, 100], [4, 65535]]))),
    frames: fc.array(frameArb(seed), { minLength: 1, maxLength: 6 }),
  });
}

function waitClose(s: Socket, ms: number): Promise<boolean> {
  return new Promise((resolve) => {
    if (s.destroyed) return resolve(true);
    const t = setTimeout(() => resolve(false), ms);
    s.once('close', () => {
      clearTimeout(t);
      resolve(true);
    });
  });
}

async function runRawCase(c: RawCase): Promise<void> {
  seen.raw++;
  const certOpts = c.cert === 'none' ? {} : c.cert === 'mesh' ? { cert: clientCert.certChainPem, key: clientCert.keyPem } : { cert: certs[c.cert].certChainPem, key: certs[c.cert].keyPem };
  const sock = tlsConnect({ host: '127.0.0.1', port: serverPort, ALPNProtocols: ['h2'], ca: rootPem, checkServerIdentity: () => undefined, ...certOpts });
  sock.on('error', () => {});
  sock.on('data', () => {});
  const up = await new Promise<boolean>((resolve) => {
    sock.once('secureConnect', () => resolve(true));
    sock.once('close', () => resolve(false));
  });
  if (up) {
    sock.write(Buffer.concat([c.preface, c.settings, ...c.frames]));
    sock.end();
  }
  // The server closes the connection once it has read our FIN (or refused us earlier).
  if (!(await waitClose(sock, 5000))) {
    seen.rawLingering++;
    sock.destroy();
  }
}

async function runTcpCase(c: TcpCase): Promise<void> {
  seen.tcp++;
  const sock = tcpConnect({ host: '127.0.0.1', port: serverPort });
  sock.on('error', () => {});
  sock.on('data', () => {});
  await new Promise<void>((resolve) => {
    sock.once('connect', () => resolve());
    sock.once('close', () => resolve());
  });
  sock.end(c.bytes);
  if (!(await waitClose(sock, 5000))) {
    seen.rawLingering++;
    sock.destroy();
  }
}

describe('fuzz: HBONE CONNECT against a live 15008 server', () => {
  const budget = fuzzBudget(150);
  it(
    `answers or refuses every request, never reaches an app it must not, and serves a good CONNECT after each (${budget.runs} cases)`,
    async () => {
      await goodConnect();
      const fdsBefore = openFds();
      const caseArb = fc.oneof<[fc.WeightedArbitrary<ClientCase>, fc.WeightedArbitrary<RawCase>, fc.WeightedArbitrary<TcpCase>]>(
        { weight: 5, arbitrary: clientCaseArb },
        { weight: 4, arbitrary: rawCaseArb() },
        { weight: 1, arbitrary: fc.record({ kind: fc.constant('tcp' as const), bytes: fc.oneof(fc.uint8Array({ minLength: 1, maxLength: 64 }), mutatedBytes([PREFACE], 3)) }) },
      );
      const tick = progress('hbone', budget.runs);
      await fc.assert(
        fc.asyncProperty(caseArb, async (c) => {
          tick();
          if (c.kind === 'client') await runClientCase(c);
          else if (c.kind === 'raw') await runRawCase(c);
          else await runTcpCase(c);
          await goodConnect();
          watch.check();
          expect(reachedForbidden, 'connections that reached the app behind a deny or a failed authorization').toBe(0);
        }),
        fuzzParams(budget),
      );
      session?.destroy();
      if (budget.runs >= 10_000) process.stderr.write(`fuzz hbone: ${JSON.stringify({ ...seen, stats: server.stats() })}\n`);
      // Nothing left open: no tunnel, only the pool's session, and no descriptor leaked.
      expect(await settle(() => server.stats().activeStreams === 0 && server.stats().sessions <= 1), `server state at the end: ${JSON.stringify(server.stats())}`).toBe(true);
      const fdsAfter = openFds();
      if (fdsBefore !== undefined && fdsAfter !== undefined) expect(await settle(() => openFds()! <= fdsBefore + 8), `fds ${fdsBefore} → ${openFds()}`).toBe(true);
      expect(seen.rawLingering, 'connections the server kept open after the client’s FIN').toBe(0);
      // The positive twins: good requests were answered 200, bad ones refused.
      expect(seen.answered[200] ?? 0).toBeGreaterThan(0);
      expect(seen.answered[400] ?? 0).toBeGreaterThan(0);
      expect(server.stats().answered['401'] ?? 0).toBeGreaterThan(0);
    },
    budget.testTimeoutMs,
  );
});
