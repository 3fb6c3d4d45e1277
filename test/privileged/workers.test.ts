// Proxy workers end to end (src/agent/proxy-workers.ts, proxy-worker.ts): an agent started
// with --workers 2 runs its main thread's proxy and one worker thread, each with its own
// sockets in every pod's SO_REUSEPORT groups. The kernel spreads connections over both; each
// proxy decides on the same state (a policy denies in both, and revokes open connections in
// both); flows and metrics of both come out of the one admin endpoint, with ids in start order
// node-wide and `proxy` naming the proxy that served each (0 the main thread's, 1 the worker).
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { describePrivileged } from '../helpers/privileged.js';
import { BACKEND, BATCH, DENY_FRONTEND, FRONTEND, FRONTEND_SERVICE_ACCOUNT, SHOP_NAMESPACE, yamlDocs } from '../helpers/shop.js';
import { cli, leftovers, meshUp, writeConfig, type Mesh } from '../helpers/mesh.js';
import { follow, hasTshark } from '../helpers/tshark.js';

const config = yamlDocs(SHOP_NAMESPACE, FRONTEND_SERVICE_ACCOUNT, BACKEND, FRONTEND, BATCH);

describePrivileged('proxy workers (--workers 2)', () => {
  let mesh: Mesh;
  let dir: string;
  const dump = async () => (await mesh.dump()) as unknown as { agent: { proxies: number }; pods: { name: string }[]; workerListeners?: { worker: number; listeners: { pod: string }[] }[] };
  const policies = async () => ((await mesh.dump()) as unknown as { policies: { name: string }[] }).policies.map((p) => p.name);
  const waitPolicy = async (name: string, present: boolean) => {
    const t0 = Date.now();
    while ((await policies()).includes(name) !== present) {
      if (Date.now() - t0 > 5000) throw new Error(`policy ${name} ${present ? 'never arrived' : 'never left'}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  };
  const whos = (from: string, n: number) => mesh.client(from, ['whos', mesh.ip('shop/backend'), '8080', String(n)], 120_000) as { counts: Record<string, number> };
  /** The ids of every record so far: the proxies' id sequences advance at their own pace, so "newer" is "not seen before". */
  const seen = async () => new Set((await mesh.flows()).map((f) => f.id));
  const inboundFrom = async (workload: string, before: Set<number>) => (await mesh.flows()).filter((f) => f.direction === 'inbound' && f.src.workload === workload && !before.has(f.id));

  beforeAll(async () => {
    dir = writeConfig(config);
    mesh = await meshUp(dir, { controlPlane: true, agentArgs: ['--workers', '2'] });
  });

  afterAll(async () => {
    await mesh?.down();
    rmSync(dir, { recursive: true, force: true });
    expect(leftovers(...(mesh ? [mesh.pinRoot] : []))).toEqual([]);
  });

  it('runs two proxies, each listening for every pod', async () => {
    const d = await dump();
    expect(d.agent.proxies).toBe(2);
    expect(d.workerListeners?.map((w) => w.worker)).toEqual([1]);
    const pods = d.pods.map((p) => `shop/${p.name}`).sort();
    expect(d.workerListeners![0]!.listeners.map((l) => l.pod).sort()).toEqual(pods);
  });

  it('spreads connections over both proxies, with flows and metrics of both on the one endpoint', async () => {
    const before = await seen();
    const r = whos('shop/frontend', 40);
    expect(r.counts).toEqual({ ok: 40 });
    // A worker's finished records reach the main thread within 100 ms.
    await new Promise((res) => setTimeout(res, 300));
    const recs = await inboundFrom('frontend', before);
    expect(recs).toHaveLength(40);
    const by = [0, 1].map((k) => recs.filter((f) => f.proxy === k).length);
    // Each proxy took a share (40 connections all hashed to one side: 2^-39).
    expect(by[0]).toBeGreaterThan(0);
    expect(by[1]).toBeGreaterThan(0);
    for (const f of recs) expect(f.src.principal).toBe('cluster.local/ns/shop/sa/frontend');
    const metrics = await (await fetch('http://127.0.0.1:15020/metrics')).text();
    const opened = [...metrics.matchAll(/istio_tcp_connections_opened_total\{([^}]*)\} (\d+)/g)]
      .filter(([, l]) => l!.includes('reporter="destination"') && l!.includes('source_workload="frontend"') && l!.includes('destination_workload="backend"'))
      .reduce((n, m) => n + Number(m[2]), 0);
    expect(opened).toBeGreaterThanOrEqual(40);
  });

  it('denies in both proxies once a policy arrives, and allows again in both when it goes', async () => {
    writeFileSync(join(dir, 'deny.yaml'), DENY_FRONTEND);
    try {
      await waitPolicy('deny-frontend', true);
      const before = await seen();
      const denied = whos('shop/frontend', 30);
      expect(denied.counts.ok ?? 0).toBe(0);
      // batch is not named by the policy: the same proxies still serve it.
      expect(whos('shop/batch', 10).counts).toEqual({ ok: 10 });
      await new Promise((res) => setTimeout(res, 300));
      const recs = (await inboundFrom('frontend', before)).filter((f) => f.responseFlags === 'DENY');
      expect(recs).toHaveLength(30);
      expect(new Set(recs.map((f) => f.proxy))).toEqual(new Set([0, 1]));
      for (const f of recs) expect(f.policy).toEqual({ allowed: false, name: 'shop/deny-frontend' });
    } finally {
      rmSync(join(dir, 'deny.yaml'), { force: true });
    }
    await waitPolicy('deny-frontend', false);
    expect(whos('shop/frontend', 10).counts).toEqual({ ok: 10 });
  });

  it('revokes open connections in both proxies when a new policy denies them', async () => {
    const before = await seen();
    const longs = Array.from({ length: 8 }, () => mesh.clientAsync('shop/frontend', ['echoloop', mesh.ip('shop/backend'), '9090', '8']));
    const t0 = Date.now();
    let open: Awaited<ReturnType<typeof inboundFrom>> = [];
    while (Date.now() - t0 < 15_000) {
      open = (await inboundFrom('frontend', before)).filter((f) => f.open && f.dst.port === 9090);
      if (open.length === 8) break;
      await new Promise((res) => setTimeout(res, 100));
    }
    expect(open).toHaveLength(8);
    const sides = new Set(open.map((f) => f.proxy));
    writeFileSync(join(dir, 'deny.yaml'), DENY_FRONTEND);
    try {
      const results = await Promise.all(longs);
      for (const r of results) expect(r.outcome).toBe('reset');
      // Revoked in whichever proxy held them (8 all on one side is 2^-7; then this says so).
      expect(sides.size, `all 8 connections landed in proxy ${[...sides][0]}`).toBe(2);
    } finally {
      rmSync(join(dir, 'deny.yaml'), { force: true });
    }
    await waitPolicy('deny-frontend', false);
  });

  it('captures the plaintext of connections in both proxies, byte for byte (pcap)', async () => {
    expect(hasTshark, 'tshark is installed (make apt-deps)').toBe(true);
    const tmp = mkdtempSync(join(tmpdir(), 'nm-workers-cap-'));
    try {
      const file = join(tmp, 'bulk.pcap');
      const child = spawn(cli, ['capture', '--pcap', file, '--to', 'shop/backend', '--port', '9090', '--state-dir', mesh.sd], { stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      let err = '';
      child.stdout!.on('data', (d: Buffer) => (out += d));
      child.stderr!.on('data', (d: Buffer) => (err += d));
      const exit = new Promise<number | null>((r) => child.on('exit', (c) => r(c)));
      try {
        const t0 = Date.now();
        while (!err.includes('capturing on node')) {
          if (child.exitCode !== null || Date.now() - t0 > 10_000) throw new Error(`capture did not start: ${err}${out}`);
          await new Promise((r) => setTimeout(r, 20));
        }
        const before = await seen();
        const sizes = sizes8();
        const results = await Promise.all(sizes.map((n) => mesh.clientAsync('shop/batch', ['bulk', mesh.ip('shop/backend'), '9090', String(n)])));
        for (const r of results) expect(r.client_sha).toBe(r.expect_down_sha);
        const t1 = Date.now();
        while ((out.match(/allowed/g) ?? []).length < sizes.length && Date.now() - t1 < 10_000) await new Promise((r) => setTimeout(r, 50));
        const recs = (await inboundFrom('batch', before)).filter((f) => f.dst.port === 9090);
        expect(recs).toHaveLength(sizes.length);
        expect(new Set(recs.map((f) => f.proxy)), 'the 8 connections all landed in one proxy (2^-7)').toEqual(new Set([0, 1]));
      } finally {
        child.kill('SIGINT');
      }
      expect(await exit).toBe(0);
      const streams = sizes8().map((_, i) => follow(file, i));
      for (const n of sizes8()) {
        const st = streams.find((x) => x.c2s.length === `BULK ${n}\n`.length + n);
        expect(st, `a captured stream of ${n} bytes up`).toBeDefined();
        expect(st!.c2s.subarray(0, `BULK ${n}\n`.length).toString()).toBe(`BULK ${n}\n`);
        expect(st!.s2c.length - st!.s2c.indexOf(0x0a) - 1).toBe(n);
      }
    } finally {
      rmSync(tmp, { recursive: true, force: true });
    }
  });
});

const sizes8 = (): number[] => [100_001, 100_002, 100_003, 100_004, 100_005, 100_006, 100_007, 100_008];
