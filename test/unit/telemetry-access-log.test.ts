// The per-request access log written to a real file: Istio's JSON fields, nothing when off,
// only failures in errors mode, sampling that never hides a failure, the lines-per-second cap,
// and the --access-log option value.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { AccessLog, parseAccessLogMode, type AccessLogContext } from '../../src/telemetry/access-log.js';
import type { RequestFacts } from '../../src/telemetry/requests.js';
import { testTempDir } from '../helpers/tmp.js';

function req(over: Partial<RequestFacts> = {}): RequestFacts {
  return {
    protocol: 'HTTP/1.1',
    method: 'GET',
    path: '/items?page=2',
    authority: 'api.shop.svc.cluster.local',
    status: 200,
    requestBytes: 12,
    responseBytes: 345,
    durationMs: 6.6,
    responseFlags: '-',
    upstream: '10.0.0.2:8080',
    upgraded: false,
    attempts: 1,
    ...over,
  };
}

const ctx: AccessLogContext = {
  reporter: 'source',
  source: { ip: '10.0.0.1', port: 40000, workload: 'web', namespace: 'shop', principal: 'cluster.local/ns/shop/sa/web' },
  destination: { ip: '10.0.0.2', port: 8080, workload: 'api', namespace: 'shop' },
  originalDst: '10.96.0.10:80',
  service: { hostname: 'api.shop.svc.cluster.local' },
};

async function lines(log: AccessLog, file: string): Promise<Record<string, unknown>[]> {
  await log.close();
  if (!existsSync(file)) return [];
  return readFileSync(file, 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as Record<string, unknown>);
}

describe('AccessLog', () => {
  it("writes one line per request with Istio's JSON access log fields", async () => {
    const file = join(testTempDir('nm-access-'), 'logs', 'access.log');
    const log = new AccessLog({ mode: 'all', dest: file });
    const before = Date.now();
    expect(log.write(ctx, req({ userAgent: 'curl/8.5.0', requestId: 'r-1', traceId: '4bf92f3577b34da6a3ce929d0e0e4736' }))).toBe(true);
    const [line, ...rest] = await lines(log, file);
    expect(rest).toEqual([]);
    expect(line).toEqual({
      level: 30,
      start_time: expect.any(String),
      method: 'GET',
      path: '/items?page=2',
      protocol: 'HTTP/1.1',
      response_code: 200,
      response_flags: '-',
      bytes_received: 12,
      bytes_sent: 345,
      duration: 7,
      upstream_host: '10.0.0.2:8080',
      user_agent: 'curl/8.5.0',
      request_id: 'r-1',
      authority: 'api.shop.svc.cluster.local',
      downstream_remote_address: '10.0.0.1:40000',
      downstream_local_address: '10.96.0.10:80',
      trace_id: '4bf92f3577b34da6a3ce929d0e0e4736',
      attempts: 1,
      reporter: 'source',
      source_workload: 'web',
      source_namespace: 'shop',
      source_principal: 'spiffe://cluster.local/ns/shop/sa/web',
      destination_workload: 'api',
      destination_namespace: 'shop',
      destination_service: 'api.shop.svc.cluster.local',
    });
    const start = Date.parse(line!.start_time as string);
    expect(start).toBeLessThanOrEqual(Date.now());
    expect(start).toBeGreaterThanOrEqual(before - 7 - 1);
    expect(log.stats()).toEqual({ written: 1, dropped: 0, sampledOut: 0 });
  });

  it('opens nothing and writes nothing when off', async () => {
    const file = join(testTempDir('nm-access-'), 'access.log');
    const log = new AccessLog({ mode: 'off', dest: file });
    expect(log.wants(req({ status: 503 }))).toBe(false);
    expect(log.write(ctx, req({ status: 503, responseFlags: 'UF' }))).toBe(false);
    expect(await lines(log, file)).toEqual([]);
    expect(existsSync(file)).toBe(false);
  });

  it('logs only failed requests in errors mode: no response, 4xx/5xx, response flags, a gRPC error', async () => {
    const file = join(testTempDir('nm-access-'), 'access.log');
    const log = new AccessLog({ mode: 'errors', dest: file });
    const ok = req({ path: '/ok' });
    expect(log.wants(ok)).toBe(false);
    log.write(ctx, ok);
    log.write(ctx, req({ path: '/ok-grpc', protocol: 'HTTP/2', grpcStatus: '0' }));
    log.write(ctx, req({ path: '/gone', status: 0 }));
    log.write(ctx, req({ path: '/missing', status: 404 }));
    log.write(ctx, req({ path: '/retried', status: 200, responseFlags: 'URX' }));
    log.write(ctx, req({ path: '/grpc', protocol: 'HTTP/2', grpcStatus: '14' }));
    const got = (await lines(log, file)).map((l) => l.path);
    expect(got).toEqual(['/gone', '/missing', '/retried', '/grpc']);
  });

  it('samples successful requests only: failures are always logged', async () => {
    const file = join(testTempDir('nm-access-'), 'access.log');
    const log = new AccessLog({ mode: 'all', dest: file, sampleRate: 0 });
    for (let i = 0; i < 5; i++) log.write(ctx, req({ path: `/ok/${i}` }));
    log.write(ctx, req({ path: '/fail', status: 503, responseFlags: 'UF' }));
    expect((await lines(log, file)).map((l) => l.path)).toEqual(['/fail']);
    expect(log.stats()).toEqual({ written: 1, dropped: 0, sampledOut: 5 });
  });

  it('drops lines beyond the rate cap and lets them through again as the bucket refills', async () => {
    const file = join(testTempDir('nm-access-'), 'access.log');
    let now = 0;
    const log = new AccessLog({ mode: 'all', dest: file, maxLinesPerSec: 2, clock: () => now });
    const sent = [1, 2, 3, 4, 5].map((i) => log.write(ctx, req({ path: `/a/${i}` })));
    expect(sent).toEqual([true, true, false, false, false]);
    now += 500;
    expect(log.write(ctx, req({ path: '/b/1' }))).toBe(true);
    expect(log.write(ctx, req({ path: '/b/2' }))).toBe(false);
    now += 10_000; // a long quiet spell still holds one second's worth only
    const later = [1, 2, 3].map((i) => log.write(ctx, req({ path: `/c/${i}` })));
    expect(later).toEqual([true, true, false]);
    expect((await lines(log, file)).map((l) => l.path)).toEqual(['/a/1', '/a/2', '/b/1', '/c/1', '/c/2']);
    expect(log.stats()).toEqual({ written: 5, dropped: 5, sampledOut: 0 });
  });

  it('cuts client-controlled fields so one request cannot make a huge line', async () => {
    const file = join(testTempDir('nm-access-'), 'access.log');
    const log = new AccessLog({ mode: 'all', dest: file });
    log.write(ctx, req({ path: `/${'x'.repeat(5000)}`, userAgent: 'u'.repeat(3000) }));
    const [line] = await lines(log, file);
    expect((line!.path as string).length).toBe(2048);
    expect((line!.user_agent as string).length).toBe(2048);
  });

  it('drops and counts lines the buffer has no room for while the destination lags', async () => {
    const file = join(testTempDir('nm-access-'), 'access.log');
    const log = new AccessLog({ mode: 'all', dest: file, bufferBytes: 16, maxBufferBytes: 64 });
    expect(log.write(ctx, req())).toBe(false);
    expect(log.stats()).toEqual({ written: 0, dropped: 1, sampledOut: 0 });
    expect(await lines(log, file)).toEqual([]);
  });

  it('writes nothing after close', async () => {
    const file = join(testTempDir('nm-access-'), 'access.log');
    const log = new AccessLog({ mode: 'all', dest: file });
    log.write(ctx, req({ path: '/before' }));
    await log.close();
    expect(log.write(ctx, req({ path: '/after' }))).toBe(false);
    expect((await lines(log, file)).map((l) => l.path)).toEqual(['/before']);
  });
});

describe('parseAccessLogMode', () => {
  it('takes off, all and errors, and refuses anything else with NM_ERR_USAGE naming the option', () => {
    expect(['off', 'all', 'errors'].map((v) => parseAccessLogMode(v))).toEqual(['off', 'all', 'errors']);
    expect(() => parseAccessLogMode('ALL')).toThrow(expect.objectContaining({ code: 'NM_ERR_USAGE', details: { option: '--access-log', value: 'ALL' } }));
    expect(() => parseAccessLogMode('some', '--log-requests')).toThrow(expect.objectContaining({ details: { option: '--log-requests', value: 'some' } }));
  });
});
