// HbonePool.close() ends every session, including several under one key while they are still
// connecting: aborting one removes it from its list, which used to skip the next one and leak
// it (its socket stayed open and its connect() waited for the timeout).
import { createServer, type AddressInfo, type Socket } from 'node:net';
import { pino } from 'pino';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { HbonePool } from '../../src/proxy/hbone/pool.js';
import { createTestCa, type TestCert } from '../helpers/certs.js';

const TD = 'cluster.local';
const SERVER_ID = `spiffe://${TD}/ns/default/sa/server`;
const CLIENT_ID = `spiffe://${TD}/ns/default/sa/client`;

let client: TestCert;
beforeAll(async () => {
  client = await (await createTestCa()).issue(CLIENT_ID);
});

const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function until(cond: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 300; i++) {
    if (cond()) return;
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error(`timed out waiting for ${what}`);
}

/** A TCP server that accepts and never answers the TLS handshake: sessions stay connecting. */
async function silentServer() {
  const open = new Set<Socket>();
  const srv = createServer((s) => {
    open.add(s);
    s.on('error', () => {});
    s.resume(); // read (and drop) the ClientHello, so the client's close reaches 'end'
    s.once('close', () => open.delete(s));
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  cleanups.push(() => {
    for (const s of open) s.destroy();
    return new Promise((r) => srv.close(r));
  });
  return { open, port: (srv.address() as AddressInfo).port };
}

describe('HbonePool.close', () => {
  it('aborts every connecting session of one key, not every other one', async () => {
    const srv = await silentServer();
    // One stream per session: a second tunnel to the same destination needs a second session.
    const pool = new HbonePool({ log: pino({ level: 'silent' }), maxStreamsPerSession: 1, connectTimeoutMs: 60_000 });
    cleanups.push(() => pool.close());
    const open = () =>
      pool.connect({ source: { identity: CLIENT_ID, ...client }, destIdentity: SERVER_ID, destAddr: { ip: '127.0.0.1', port: srv.port }, target: { ip: '127.0.0.1', port: 8080 }, forwardedFor: '10.0.0.7' });
    const outcomes = [open(), open()].map((p) => p.then(() => 'connected', (e: { code?: string }) => e.code ?? 'error'));
    await until(() => srv.open.size === 2, 'two TCP connections to the server');
    expect(pool.stats().sessions.map((s) => s.state)).toEqual(['connecting', 'connecting']);
    await pool.close();
    await until(() => srv.open.size === 0, 'both sessions to close their sockets');
    expect(await Promise.all(outcomes)).toEqual(['NM_ERR_HBONE_CLOSED', 'NM_ERR_HBONE_CLOSED']);
  });

  it('keeps both sessions while the pool is open (the twin)', async () => {
    const srv = await silentServer();
    const pool = new HbonePool({ log: pino({ level: 'silent' }), maxStreamsPerSession: 1, connectTimeoutMs: 60_000 });
    cleanups.push(() => pool.close());
    const open = () =>
      pool.connect({ source: { identity: CLIENT_ID, ...client }, destIdentity: SERVER_ID, destAddr: { ip: '127.0.0.1', port: srv.port }, target: { ip: '127.0.0.1', port: 8080 }, forwardedFor: '10.0.0.7' }).catch(() => {});
    void open();
    void open();
    await until(() => srv.open.size === 2, 'two TCP connections to the server');
    await new Promise((r) => setTimeout(r, 50));
    expect(srv.open.size).toBe(2);
    expect(pool.stats().sessions).toHaveLength(2);
  });
});
