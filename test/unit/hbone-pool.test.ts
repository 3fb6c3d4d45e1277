// The HBONE client pool: one HTTP/2 session per (source identity, destination identity,
// destination address) carries up to maxStreamsPerSession tunnels; idle, failed and
// GOAWAY'd sessions leave the pool; a rotated source certificate gets a new session.
import { createServer, Socket, type AddressInfo, type Server } from 'node:net';
import { pino } from 'pino';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { HbonePool, type HbonePoolOptions } from '../../src/proxy/hbone/pool.js';
import { HboneServer } from '../../src/proxy/hbone/server.js';
import type { HboneStream } from '../../src/proxy/hbone/stream.js';
import type { HboneCredentials } from '../../src/proxy/hbone/tls.js';
import type { SocketAddress } from '../../src/proxy/index.js';
import { connectFd } from '../../src/proxy/upstream.js';
import { startApp } from '../helpers/app.js';
import { createTestCa, type TestCa, type TestCert } from '../helpers/certs.js';

const TD = 'cluster.local';
const SERVER_ID = `spiffe://${TD}/ns/default/sa/server`;
const CLIENT_ID = `spiffe://${TD}/ns/default/sa/client`;
const CLIENT2_ID = `spiffe://${TD}/ns/default/sa/client-two`;
const log = pino({ level: 'silent' });

let ca: TestCa;
let serverCert: TestCert;
let client: HboneCredentials & { identity: string };
let client2: HboneCredentials & { identity: string };
beforeAll(async () => {
  ca = await createTestCa();
  serverCert = await ca.issue(SERVER_ID);
  client = { identity: CLIENT_ID, ...(await ca.issue(CLIENT_ID)) };
  client2 = { identity: CLIENT2_ID, ...(await ca.issue(CLIENT2_ID)) };
});

const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until(cond: () => boolean, what: string, ms = 3000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

/** An echo app behind an HBONE server, and a pool with the given options. */
async function setup(o: HbonePoolOptions = {}) {
  const app = await startApp((s) => s.pipe(s), { allowHalfOpen: true });
  cleanups.push(() => app.close());
  const appPort = app.port;
  const server = new HboneServer({
    credentials: () => serverCert,
    trustDomain: TD,
    localAddresses: ['127.0.0.1'],
    authorize: () => ({ allow: true }),
    connectUpstream: (r) => connectFd(new Socket({ allowHalfOpen: true }), { ip: '127.0.0.1', port: r.target.port }, 2000),
    log,
  });
  const addr = await server.listen({ host: '127.0.0.1', port: 0 });
  cleanups.push(() => server.close());
  const pool = new HbonePool({ log, connectTimeoutMs: 3000, ...o });
  cleanups.push(() => pool.close());
  const open = (source = client, extra: { ip?: string } = {}): Promise<HboneStream> =>
    pool.connect({ source: { ...source, ...extra }, destIdentity: SERVER_ID, destAddr: addr, target: { ip: '127.0.0.1', port: appPort }, forwardedFor: '10.1.0.7' });
  return { server, addr, pool, open };
}

/** Ends a tunnel cleanly and waits until it is closed (its stream slot is then free). */
async function finish(s: HboneStream): Promise<void> {
  const closed = new Promise((r) => s.once('close', r));
  s.resume();
  s.end();
  await closed;
}

describe('HBONE pool', () => {
  it('carries two tunnels with the same key on one session', async () => {
    const h = await setup();
    const a = await h.open();
    const b = await h.open();
    const { sessions } = h.pool.stats();
    expect(sessions).toHaveLength(1);
    expect(sessions[0]).toMatchObject({ source: CLIENT_ID, destIdentity: SERVER_ID, state: 'ready', streams: 2, maxStreams: 100 });
    expect(h.server.stats().sessions).toBe(1);
    // Both tunnels work independently on the shared session.
    const echoed = (s: HboneStream, text: string) =>
      new Promise<string>((resolve) => {
        let got = '';
        s.on('data', (c: Buffer) => (got += c.toString()));
        s.on('end', () => resolve(got));
        s.end(text);
      });
    expect(await Promise.all([echoed(a, 'one'), echoed(b, 'two')])).toEqual(['one', 'two']);
  });

  it('opens one session for concurrent first connects', async () => {
    const h = await setup();
    const streams = await Promise.all(Array.from({ length: 8 }, () => h.open()));
    expect(h.pool.stats().sessions).toHaveLength(1);
    expect(h.server.stats().sessions).toBe(1);
    await Promise.all(streams.map(finish));
  });

  it('opens a second session when the first carries maxStreamsPerSession tunnels', async () => {
    const h = await setup({ maxStreamsPerSession: 2 });
    const streams = [await h.open(), await h.open(), await h.open()];
    const sessions = h.pool.stats().sessions;
    expect(sessions.map((s) => s.streams).sort()).toEqual([1, 2]);
    expect(h.server.stats().sessions).toBe(2);
    // A freed slot on the first session is reused before anything new is opened.
    await finish(streams[0]!);
    streams.push(await h.open());
    expect(h.pool.stats().sessions.map((s) => s.streams)).toEqual([2, 1]);
    expect(h.server.stats().sessions).toBe(2);
    await Promise.all(streams.slice(1).map(finish));
  });

  it('keys sessions by source identity and by source IP when given', async () => {
    const h = await setup();
    const streams = [await h.open(client), await h.open(client2), await h.open(client, { ip: '10.1.0.7' }), await h.open(client, { ip: '10.1.0.8' })];
    const keys = h.pool.stats().sessions.map((s) => s.key);
    expect(new Set(keys).size).toBe(4);
    expect(h.server.stats().sessions).toBe(4);
    await Promise.all(streams.map(finish));
  });

  it('releases a session after it has been idle for idleTimeoutMs', async () => {
    const h = await setup({ idleTimeoutMs: 150 });
    await finish(await h.open());
    const [s] = h.pool.stats().sessions;
    expect(s).toMatchObject({ streams: 0, state: 'ready' });
    // A new tunnel within the timeout reuses it and restarts the clock.
    await sleep(50);
    await finish(await h.open());
    expect(h.pool.stats().sessions).toHaveLength(1);
    await until(() => h.pool.stats().sessions.length === 0, 'the idle session to be released');
    await until(() => h.server.stats().sessions === 0, 'the server to see the session close');
  });

  it('drops a session the server closes, and opens a new one for the next tunnel', async () => {
    const h = await setup();
    const a = await h.open();
    a.on('error', () => {});
    const closed = new Promise((r) => a.once('close', r));
    await h.server.close();
    await closed;
    expect(a.errored).toMatchObject({ code: 'NM_ERR_HBONE_RESET' });
    await until(() => h.pool.stats().sessions.length === 0, 'the failed session to leave the pool');
    const err = await h.open().catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'NM_ERR_HBONE_CONNECT', cause: { code: 'ECONNREFUSED' } });
  });

  it('moves to a new session when the source certificate rotates and drains the old one', async () => {
    const h = await setup();
    const old = await h.open();
    const rotated = { identity: CLIENT_ID, ...(await ca.issue(CLIENT_ID)) };
    const fresh = await h.open(rotated);
    const sessions = h.pool.stats().sessions;
    expect(sessions.map((s) => s.state).sort()).toEqual(['draining', 'ready']);
    // The old session keeps its tunnel until it ends, then goes away.
    await finish(old);
    await until(() => h.pool.stats().sessions.length === 1, 'the drained session to close');
    expect(h.pool.stats().sessions[0]).toMatchObject({ state: 'ready', streams: 1 });
    await finish(fresh);
  });

  it('makes its TCP connections with connectSocket', async () => {
    const dialed: { addr: SocketAddress; source: { identity: string; ip?: string } }[] = [];
    const h = await setup({
      connectSocket: (addr, source) => {
        dialed.push({ addr, source });
        return connectFd(new Socket(), addr, 2000);
      },
    });
    await finish(await h.open(client, { ip: '10.1.0.7' }));
    expect(dialed).toEqual([{ addr: h.addr, source: { identity: CLIENT_ID, ip: '10.1.0.7' } }]);
  });

  it('times out a destination that accepts TCP but never answers TLS', async () => {
    const silent: Server = createServer(() => {});
    await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
    cleanups.push(() => {
      silent.close();
      (silent as unknown as { closeAllConnections?: () => void }).closeAllConnections?.();
    });
    const pool = new HbonePool({ log, connectTimeoutMs: 200 });
    cleanups.push(() => pool.close());
    const err = await pool
      .connect({ source: client, destIdentity: SERVER_ID, destAddr: { ip: '127.0.0.1', port: (silent.address() as AddressInfo).port }, target: { ip: '127.0.0.1', port: 80 }, forwardedFor: '10.1.0.7' })
      .catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'NM_ERR_TIMEOUT' });
    expect(pool.stats().sessions).toHaveLength(0);
  });

  it('refuses new tunnels after close()', async () => {
    const h = await setup();
    const a = await h.open();
    a.on('error', () => {});
    await h.pool.close();
    expect(a.destroyed).toBe(true);
    expect(await h.open().catch((e: unknown) => e)).toMatchObject({ code: 'NM_ERR_HBONE_CLOSED' });
  });
});
