// The HBONE listener (15008) contains failures too: each TCP connection and each CONNECT tunnel
// is its own failure domain. Telemetry that throws resets that tunnel only, an authorizer that
// throws answers 500 (never 200), a client gone before its TLS handshake is counted quietly;
// all are counted in nodemesh_connection_errors_total{direction="hbone"}, nothing reaches the
// process, and the next tunnel on the same server works.
import { connect as tcpConnect, Socket } from 'node:net';
import { pino } from 'pino';
import { afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { Boundary } from '../../src/proxy/boundary.js';
import { HbonePool } from '../../src/proxy/hbone/pool.js';
import { HboneServer, type HboneServerOptions } from '../../src/proxy/hbone/server.js';
import type { HboneStream } from '../../src/proxy/hbone/stream.js';
import { connectFd } from '../../src/proxy/upstream.js';
import { MeshMetrics } from '../../src/telemetry/index.js';
import { startApp } from '../helpers/app.js';
import { createTestCa, type TestCert } from '../helpers/certs.js';

const TD = 'cluster.local';
const SERVER_ID = `spiffe://${TD}/ns/default/sa/server`;
const CLIENT_ID = `spiffe://${TD}/ns/default/sa/client`;
const log = pino({ level: 'silent' });

let serverCert: TestCert;
let clientCert: TestCert;
beforeAll(async () => {
  const ca = await createTestCa();
  serverCert = await ca.issue(SERVER_ID);
  clientCert = await ca.issue(CLIENT_ID);
});

const escaped: unknown[] = [];
const onEscape = (e: unknown): void => void escaped.push(e);
process.on('uncaughtException', onEscape);
process.on('unhandledRejection', onEscape);

const cleanups: (() => unknown)[] = [];
beforeEach(() => {
  escaped.length = 0;
});
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
  expect(escaped).toEqual([]);
});

async function until(cond: () => boolean | Promise<boolean>, what: string): Promise<void> {
  for (let i = 0; i < 300; i++) {
    if (await cond()) return;
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error(`timed out waiting for ${what}`);
}

async function setup(o: Partial<HboneServerOptions> = {}) {
  const app = await startApp((s) => s.pipe(s), { allowHalfOpen: true });
  cleanups.push(() => app.close());
  const metrics = new MeshMetrics({ defaultMetrics: false });
  const server = new HboneServer({
    credentials: () => serverCert,
    trustDomain: TD,
    localAddresses: ['127.0.0.1'],
    authorize: () => ({ allow: true }),
    connectUpstream: () => connectFd(new Socket({ allowHalfOpen: true }), { ip: '127.0.0.1', port: app.port }, 2000),
    boundary: new Boundary({ log, metrics }),
    log,
    ...o,
  });
  const addr = await server.listen({ host: '127.0.0.1', port: 0 });
  cleanups.push(() => server.close());
  const pool = new HbonePool({ log, connectTimeoutMs: 3000 });
  cleanups.push(() => pool.close());
  const open = (): Promise<HboneStream> =>
    pool.connect({ source: { identity: CLIENT_ID, ...clientCert }, destIdentity: SERVER_ID, destAddr: addr, target: { ip: '127.0.0.1', port: 8080 }, forwardedFor: '10.0.0.7' });
  /** One tunnel: sends, half-closes, returns the echo or how it broke. */
  const echo = async (text: string): Promise<{ data: string; error?: string }> => {
    let s: HboneStream;
    try {
      s = await open();
    } catch (e) {
      const err = e as { code?: string; status?: number };
      return { data: '', error: `${err.code}${err.status ? ` ${err.status}` : ''}` };
    }
    return new Promise((resolve) => {
      let data = '';
      s.on('data', (c: Buffer) => (data += c));
      s.on('error', (e: { code?: string }) => resolve({ data, error: e.code ?? 'error' }));
      s.on('end', () => resolve({ data }));
      s.end(text);
    });
  };
  const errors = async (reason: string): Promise<number> => (await metrics.connectionErrors.get()).values.find((v) => v.labels.direction === 'hbone' && v.labels.reason === reason)?.value ?? 0;
  return { server, addr, echo, errors };
}

describe('HBONE failure boundaries', () => {
  it('resets only the tunnel whose telemetry throws, and serves the next one', async () => {
    let broken = true;
    const h = await setup({
      onStream: async () => {
        if (broken) throw new Error('flow sink broke');
      },
    });
    expect((await h.echo('one')).error).toBe('NM_ERR_HBONE_RESET');
    await until(async () => (await h.errors('internal')) === 1, 'the failure to be counted');
    broken = false;
    expect(await h.echo('two')).toEqual({ data: 'two' });
  });

  it('answers 500 when authorization throws, never 200, and counts it', async () => {
    let broken = true;
    const h = await setup({
      authorize: () => {
        if (broken) throw new TypeError('invalid IP address ""');
        return { allow: true };
      },
    });
    expect((await h.echo('one')).error).toBe('NM_ERR_HBONE_STATUS 500');
    expect(await h.errors('authorize')).toBe(1);
    broken = false;
    expect(await h.echo('two')).toEqual({ data: 'two' });
  });

  it('contains a throwing rejection report (telemetry of a refused CONNECT)', async () => {
    const h = await setup({
      authorize: () => ({ allow: false, reason: 'denied by test' }),
      onReject: () => {
        throw new Error('refused-connection telemetry broke');
      },
    });
    expect((await h.echo('one')).error).toBe('NM_ERR_HBONE_STATUS 401');
    await until(async () => (await h.errors('internal')) === 1, 'the failure to be counted');
  });

  it('counts quietly a client that resets before its TLS handshake', async () => {
    const h = await setup();
    for (let i = 0; i < 5; i++) {
      const s = tcpConnect(h.addr.port, '127.0.0.1', () => s.resetAndDestroy());
      s.on('error', () => {});
    }
    await until(async () => (await h.errors('peer_gone')) === 5, 'five peer_gone');
    expect(await h.echo('after')).toEqual({ data: 'after' });
  });
});
