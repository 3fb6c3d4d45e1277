// The agent's run-time stalls (src/telemetry/runtime.ts, GET /debug/runtime): a busy loop shows
// as event-loop delay, a forced collection as a major GC pause, and a reset starts an empty window.
import { get } from 'node:http';
import { createServer, type AddressInfo } from 'node:net';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { serveAgentEndpoints, type HttpEndpoints } from '../../src/agent/admin.js';
import { RuntimeMonitor, runtimeMonitor, type RuntimeWindow } from '../../src/telemetry/runtime.js';

const cleanup: Array<() => unknown> = [];
afterEach(async () => {
  for (const c of cleanup.splice(0)) await c();
});

const busy = (ms: number): void => {
  const until = performance.now() + ms;
  while (performance.now() < until);
};
const turn = (ms = 5) => new Promise((r) => setTimeout(r, ms));

/** Waits (a bounded number of loop turns) until `ok` holds: GC entries arrive asynchronously. */
async function until(ok: () => boolean): Promise<void> {
  for (let i = 0; i < 200 && !ok(); i++) await turn();
}

function forcedGc(): () => void {
  setFlagsFromString('--expose-gc');
  return runInNewContext('gc') as () => void;
}

describe('RuntimeMonitor', () => {
  it('reports a busy loop as event-loop delay of at least the time forced, less one resolution', async () => {
    const m = new RuntimeMonitor({ resolutionMs: 5 });
    cleanup.push(() => m.close());
    m.reset();
    await turn(30); // the histogram drops the timer interval a reset falls in
    busy(120);
    await turn(20); // the timer that was due during the loop runs now, late
    const w = m.snapshot();
    expect(w.eventLoopDelay.samples).toBeGreaterThan(0);
    expect(w.eventLoopDelay.maxUs).toBeGreaterThanOrEqual((120 - 5) * 1000);
    expect(w.eventLoopDelay.p99Us).toBeLessThanOrEqual(w.eventLoopDelay.maxUs);
    expect(w.eventLoopDelay.resolutionMs).toBe(5);
  });

  it('counts a forced collection as a major GC pause, and a reset empties the window', async () => {
    const gc = forcedGc();
    const m = new RuntimeMonitor();
    cleanup.push(() => m.close());
    busy(30);
    await turn(20);
    gc();
    await until(() => m.snapshot().gc.byKind.major.count > 0);
    const w = m.snapshot();
    expect(w.gc.byKind.major.count).toBeGreaterThanOrEqual(1);
    expect(w.gc.count).toBeGreaterThanOrEqual(w.gc.byKind.major.count);
    expect(w.gc.byKind.major.maxMs).toBeGreaterThan(0);
    expect(w.gc.totalMs).toBeGreaterThanOrEqual(w.gc.maxMs);
    expect(w.eventLoopDelay.maxUs).toBeGreaterThan(0);

    m.reset();
    const empty = m.snapshot();
    expect(empty.gc).toMatchObject({ count: 0, totalMs: 0, maxMs: 0 });
    expect(empty.gc.byKind.major.count).toBe(0);
    expect(empty.eventLoopDelay).toMatchObject({ samples: 0, maxUs: 0, p99Us: 0 });
    expect(Date.parse(empty.since)).toBeGreaterThanOrEqual(Date.parse(w.since));
  });

  it('does not count pauses after close', async () => {
    const gc = forcedGc();
    const m = new RuntimeMonitor();
    m.close();
    gc();
    const open = new RuntimeMonitor();
    cleanup.push(() => open.close());
    gc();
    await until(() => open.snapshot().gc.byKind.major.count > 0);
    expect(open.snapshot().gc.byKind.major.count).toBeGreaterThan(0);
    expect(m.snapshot().gc.count).toBe(0);
  });
});

async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const { port } = s.address() as AddressInfo;
  await new Promise((r) => s.close(r));
  return port;
}

describe('GET /debug/runtime', () => {
  const fetchJson = (port: number, path: string) =>
    new Promise<RuntimeWindow>((resolve, reject) => {
      get({ host: '127.0.0.1', port, path }, (res) => {
        let body = '';
        res.on('data', (d: Buffer) => (body += d));
        res.on('end', () => (res.statusCode === 200 ? resolve(JSON.parse(body) as RuntimeWindow) : reject(new Error(`${res.statusCode}: ${body}`))));
      }).on('error', reject);
    });

  it('answers the window, and with ?reset=1 answers it and starts a new one', async () => {
    const port = await freePort();
    const ep = { host: '127.0.0.1', port: 0 };
    const http: HttpEndpoints = await serveAgentEndpoints({
      log: pino({ level: 'silent' }),
      admin: { host: '127.0.0.1', port },
      metricsAt: ep,
      readyAt: ep,
      notReady: () => [],
      configDump: () => ({}),
      flows: () => ({}),
      metrics: async () => ({ contentType: 'text/plain', body: '' }),
    });
    cleanup.push(() => http.close());
    expect(http.unbound()).toEqual([]);
    await turn(30);
    busy(60);
    await turn(30);
    const before = await fetchJson(port, '/debug/runtime?reset=1');
    expect(before.eventLoopDelay.maxUs).toBeGreaterThanOrEqual((60 - runtimeMonitor().resolutionMs) * 1000);
    // The reset came after the stall: the new window does not hold it.
    const after = runtimeMonitor().snapshot();
    expect(after.eventLoopDelay.maxUs).toBeLessThan(before.eventLoopDelay.maxUs);
    expect(Date.parse(after.since)).toBeGreaterThanOrEqual(Date.parse(before.since));
  });
});
