// The HBONE pool keeps a source identity's TLS context (its certificate and key, parsed once)
// only while a session of that identity is pooled: once the last one is gone, so is the
// context, and a pod that left the node leaves no key material behind in the pool.
import { Socket } from 'node:net';
import { pino } from 'pino';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { HbonePool } from '../../src/proxy/hbone/pool.js';
import { HboneServer } from '../../src/proxy/hbone/server.js';
import type { HboneStream } from '../../src/proxy/hbone/stream.js';
import type { HboneCredentials } from '../../src/proxy/hbone/tls.js';
import { connectFd } from '../../src/proxy/upstream.js';
import { startApp } from '../helpers/app.js';
import { createTestCa, type TestCert } from '../helpers/certs.js';

const TD = 'cluster.local';
const SERVER_ID = `spiffe://${TD}/ns/default/sa/server`;
const log = pino({ level: 'silent' });
type Source = HboneCredentials & { identity: string };

let serverCert: TestCert;
let a: Source;
let b: Source;
beforeAll(async () => {
  const ca = await createTestCa();
  serverCert = await ca.issue(SERVER_ID);
  a = { identity: `spiffe://${TD}/ns/default/sa/a`, ...(await ca.issue(`spiffe://${TD}/ns/default/sa/a`)) };
  b = { identity: `spiffe://${TD}/ns/default/sa/b`, ...(await ca.issue(`spiffe://${TD}/ns/default/sa/b`)) };
});

const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function until(cond: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 500 && !cond(); i++) await new Promise((r) => setTimeout(r, 10));
  if (!cond()) throw new Error(`timed out waiting for ${what}`);
}

async function finish(s: HboneStream): Promise<void> {
  const closed = new Promise((r) => s.once('close', r));
  s.resume();
  s.end();
  await closed;
}

describe('HBONE pool TLS contexts', () => {
  it('drops a source identity\'s context with its last session, and keeps the contexts of identities still talking', async () => {
    const app = await startApp((s) => s.pipe(s), { allowHalfOpen: true });
    cleanups.push(() => app.close());
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
    const pool = new HbonePool({ log, idleTimeoutMs: 20 });
    cleanups.push(() => pool.close());
    const open = (source: Source) => pool.connect({ source, destIdentity: SERVER_ID, destAddr: addr, target: { ip: '127.0.0.1', port: app.port }, forwardedFor: '10.1.0.7' });

    const ta = await open(a);
    const tb = await open(b);
    expect(pool.stats().tlsContexts).toBe(2);
    await finish(ta); // a's session goes idle and is closed after 20 ms
    await until(() => pool.stats().sessions.every((s) => s.source !== a.identity), 'a\'s session to close');
    expect(pool.stats().tlsContexts).toBe(1); // b, still talking, keeps its context
    await finish(tb);
    await until(() => pool.stats().sessions.length === 0, 'b\'s session to close');
    expect(pool.stats().tlsContexts).toBe(0);
    // And a new tunnel of a builds its context again.
    const again = await open(a);
    expect(pool.stats().tlsContexts).toBe(1);
    await finish(again);
  });
});
