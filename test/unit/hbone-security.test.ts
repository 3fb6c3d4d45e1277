// Who may open an HBONE tunnel: the client accepts only the expected server identity; the
// server admits only clients whose chain ends in the mesh roots and whose SPIFFE ID is in its
// trust domain, over TLS 1.3 with h2. A refused client never reaches authorization or the app.
import { Socket } from 'node:net';
import { connect as tlsConnect, type ConnectionOptions } from 'node:tls';
import { pino } from 'pino';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { HbonePool, HboneServer, type HboneCredentials } from '../../src/proxy/hbone/index.js';
import { connectFd } from '../../src/proxy/upstream.js';
import { startApp } from '../helpers/app.js';
import { createTestCa, type TestCa, type TestCert } from '../helpers/certs.js';

const TD = 'cluster.local';
const SERVER_ID = `spiffe://${TD}/ns/default/sa/server`;
const SERVER2_ID = `spiffe://${TD}/ns/default/sa/server-v2`;
const CLIENT_ID = `spiffe://${TD}/ns/default/sa/client`;
const log = pino({ level: 'silent' });

let mesh: TestCa;
let other: TestCa;
let serverCert: TestCert;
let clientCert: TestCert;
beforeAll(async () => {
  mesh = await createTestCa({ name: 'mesh root', intermediate: true });
  other = await createTestCa({ name: 'some other root' });
  serverCert = await mesh.issue(SERVER_ID);
  clientCert = await mesh.issue(CLIENT_ID);
});

const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

/** An HBONE server in front of an app that counts its accepted connections. */
async function setup(credentials: () => HboneCredentials = () => serverCert) {
  let accepts = 0;
  let authorized = 0;
  const app = await startApp((s) => {
    accepts++;
    s.end('hello');
  });
  cleanups.push(() => app.close());
  const appPort = app.port;
  const server = new HboneServer({
    credentials,
    trustDomain: TD,
    localAddresses: ['127.0.0.1'],
    authorize: () => {
      authorized++;
      return { allow: true };
    },
    connectUpstream: (r) => connectFd(new Socket({ allowHalfOpen: true }), { ip: '127.0.0.1', port: r.target.port }, 2000),
    log,
  });
  const addr = await server.listen({ host: '127.0.0.1', port: 0 });
  cleanups.push(() => server.close());
  const pool = new HbonePool({ log, connectTimeoutMs: 3000 });
  cleanups.push(() => pool.close());
  const open = (source: HboneCredentials & { identity: string }, destIdentity = SERVER_ID) =>
    pool.connect({ source, destIdentity, destAddr: addr, target: { ip: '127.0.0.1', port: appPort }, forwardedFor: '10.1.0.7' });
  return { server, addr, pool, open, accepts: () => accepts, authorized: () => authorized };
}

/** Connects with raw TLS; resolves how the connection ended (an error code or 'close'). */
function rawTls(port: number, o: ConnectionOptions): Promise<string> {
  return new Promise((resolve) => {
    const s = tlsConnect({ host: '127.0.0.1', port, ALPNProtocols: ['h2'], checkServerIdentity: () => undefined, ca: mesh.rootPem, ...o });
    cleanups.push(() => s.destroy());
    let code = 'close';
    s.on('error', (e: Error & { code?: string }) => (code = e.code ?? e.message));
    // An HTTP/2 preface, so a server that accepted would answer with SETTINGS.
    s.on('secureConnect', () => s.write('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'));
    s.on('data', () => {
      code = 'data';
      s.destroy();
    });
    s.on('close', () => resolve(code));
  });
}

describe('HBONE security', () => {
  it('client refuses a server whose URI SAN is not the expected identity', async () => {
    const h = await setup();
    const err = await h.open({ identity: CLIENT_ID, ...clientCert }, `spiffe://${TD}/ns/default/sa/someone-else`).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'NM_ERR_HBONE_IDENTITY' });
    expect(h.accepts()).toBe(0);
    expect(h.authorized()).toBe(0);
  });

  it('client refuses a server whose chain does not end in its roots', async () => {
    const rogue = await other.issue(SERVER_ID);
    const h = await setup(() => ({ ...rogue, rootsPem: mesh.rootPem }));
    const err = await h.open({ identity: CLIENT_ID, ...clientCert }).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'NM_ERR_HBONE_TLS' });
    expect(h.accepts()).toBe(0);
  });

  it('server refuses a client without a certificate at the TLS layer', async () => {
    const h = await setup();
    const end = await rawTls(h.addr.port, {});
    expect(end).not.toBe('data');
    expect(h.accepts()).toBe(0);
    expect(h.authorized()).toBe(0);
    expect(h.server.stats().tlsRejected).toBe(1);
  });

  it('server refuses a client whose certificate chains to another root', async () => {
    const h = await setup();
    const stranger = await other.issue(CLIENT_ID);
    // The stranger trusts the mesh root, so only the server's check can stop it.
    const err = await h.open({ identity: CLIENT_ID, ...stranger, rootsPem: mesh.rootPem }).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'NM_ERR_HBONE_TLS' });
    expect(await rawTls(h.addr.port, { cert: stranger.certChainPem, key: stranger.keyPem })).not.toBe('data');
    expect(h.accepts()).toBe(0);
    expect(h.authorized()).toBe(0);
  });

  it('server refuses a client whose SPIFFE ID is in another trust domain', async () => {
    const h = await setup();
    const foreign = await mesh.issue('spiffe://other.domain/ns/default/sa/client');
    const err = await h.open({ identity: 'spiffe://other.domain/ns/default/sa/client', ...foreign }).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'NM_ERR_HBONE_TLS' });
    expect(h.accepts()).toBe(0);
    expect(h.authorized()).toBe(0);
    expect(h.server.stats().identityRejected).toBe(1);
  });

  it('server refuses a mesh-signed certificate that carries no SPIFFE ID', async () => {
    const h = await setup();
    const plain = await mesh.issue({ dns: ['client.example'] });
    expect(await rawTls(h.addr.port, { cert: plain.certChainPem, key: plain.keyPem })).not.toBe('data');
    const twoIds = await mesh.issue({ uris: [CLIENT_ID, SERVER_ID] });
    expect(await rawTls(h.addr.port, { cert: twoIds.certChainPem, key: twoIds.keyPem })).not.toBe('data');
    expect(h.server.stats().identityRejected).toBe(2);
    expect(h.accepts()).toBe(0);
  });

  it('server refuses TLS 1.2 and clients that do not offer h2', async () => {
    const h = await setup();
    const creds = { cert: clientCert.certChainPem, key: clientCert.keyPem };
    expect(await rawTls(h.addr.port, { ...creds, maxVersion: 'TLSv1.2' })).not.toBe('data');
    expect(await rawTls(h.addr.port, { ...creds, ALPNProtocols: ['http/1.1'] })).not.toBe('data');
    expect(h.accepts()).toBe(0);
    // The same client with TLS 1.3 and h2 is served: the refusals above were for those reasons.
    expect(await rawTls(h.addr.port, creds)).toBe('data');
  });

  it('presents a rotated server certificate on new connections', async () => {
    let current: HboneCredentials = serverCert;
    const h = await setup(() => current);
    const source = { identity: CLIENT_ID, ...clientCert };
    expect(await h.open(source, SERVER2_ID).catch((e: unknown) => e)).toMatchObject({ code: 'NM_ERR_HBONE_IDENTITY' });
    current = await mesh.issue(SERVER2_ID);
    const s = await h.open(source, SERVER2_ID);
    s.resume();
    await new Promise((r) => s.once('end', r));
    s.end();
    expect(h.accepts()).toBe(1);
  });
});
