// Two agents for one node, the unprivileged parts: the CNI socket taken over in one rename and
// never removed by the agent it was taken from, the pid file as the node's claim, endpoints
// that cannot be bound (retried, reported, never silent), and enrollment that never detaches
// a pod that was enrolled before (it stays enrolled and is retried).
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { get } from 'node:http';
import { connect, createServer, type AddressInfo, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { pino } from 'pino';
import { HttpEndpoints } from '../../src/agent/admin.js';
import { CniServer } from '../../src/agent/cni-server.js';
import { Enroller, type EnrolledPod, type RedirectBackend } from '../../src/agent/enrollment.js';
import { NodeClaim } from '../../src/agent/handoff.js';
import type { NodeProxy } from '../../src/proxy/index.js';

const log = pino({ level: 'silent' });
const cleanup: Array<() => unknown> = [];
afterEach(async () => {
  for (const c of cleanup.splice(0).reverse()) await c();
});

function tmp(prefix: string): string {
  const d = mkdtempSync(join(tmpdir(), prefix));
  cleanup.push(() => rmSync(d, { recursive: true, force: true }));
  return d;
}

/** Sends a CNI request and answers what came back (OK means the handler ran). */
function call(path: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = connect(path);
    let out = '';
    s.setEncoding('utf8');
    s.on('data', (d: string) => (out += d));
    s.on('end', () => resolve(out));
    s.on('error', reject);
    s.end(JSON.stringify({ command: 'DEL', containerId: 'c', netns: '', ifName: 'eth0', args: '', config: { cniVersion: '1.0.0' } }));
  });
}

const waitUntil = async (what: string, ok: () => boolean, timeoutMs = 5000) => {
  const deadline = Date.now() + timeoutMs;
  while (!ok()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
};

describe('CNI socket takeover', () => {
  it('moves new requests to the newer agent and leaves its socket in place when the older one closes', async () => {
    const path = join(tmp('nm-handoff-'), 'cni.sock');
    const seen: string[] = [];
    const a = await CniServer.listen(path, async () => void seen.push('a'), log);
    expect(await call(path)).toMatch(/^OK/);
    const b = await CniServer.listen(path, async () => void seen.push('b'), log);
    cleanup.push(() => b.close());
    expect(a.owns()).toBe(false);
    expect(b.owns()).toBe(true);
    expect(await call(path)).toMatch(/^OK/);
    await a.close();
    // The older agent's close removed nothing of the newer one's.
    expect(existsSync(path)).toBe(true);
    expect(await call(path)).toMatch(/^OK/);
    expect(seen).toEqual(['a', 'b', 'b']);
    await b.close();
    expect(existsSync(path)).toBe(false);
  });
});

describe('the pid file as the node claim', () => {
  it('names the claiming process, and is released only by it', () => {
    const file = join(tmp('nm-claim-'), 'agent.pid');
    const claim = new NodeClaim(file);
    expect(claim.holder()).toBeUndefined();
    claim.claim();
    expect(claim.holder()).toBe(process.pid);
    // Another live process took the node (pid 1 is always alive): this one's release keeps it.
    writeFileSync(file, '1\n');
    expect(claim.holder()).toBe(1);
    claim.release();
    expect(readFileSync(file, 'utf8')).toBe('1\n');
    claim.claim();
    claim.release();
    expect(existsSync(file)).toBe(false);
  });

  it('answers no holder for a pid file naming a process that is gone', () => {
    const file = join(tmp('nm-claim-'), 'agent.pid');
    writeFileSync(file, '999999999\n');
    expect(new NodeClaim(file).holder()).toBeUndefined();
  });
});

describe('agent endpoints', () => {
  const fetchPid = (port: number) =>
    new Promise<{ status: number; pid: string | undefined }>((resolve, reject) => {
      get({ host: '127.0.0.1', port, path: '/x', agent: false }, (res) => {
        res.resume();
        resolve({ status: res.statusCode ?? 0, pid: res.headers['x-nodemesh-agent-pid'] as string | undefined });
      }).on('error', reject);
    });

  it('binds beside another agent on the same port, and names itself in every answer', async () => {
    const first = new HttpEndpoints(log, { 'x-nodemesh-agent-pid': '1' });
    cleanup.push(() => first.close());
    const probe = createServer();
    await new Promise<void>((r) => probe.listen(0, '127.0.0.1', r));
    const port = (probe.address() as AddressInfo).port;
    await new Promise((r) => probe.close(r));
    await first.serve('admin', { host: '127.0.0.1', port }, { '/x': () => ({ body: 'one' }) });
    const second = new HttpEndpoints(log, { 'x-nodemesh-agent-pid': '2' });
    cleanup.push(() => second.close());
    await second.serve('admin', { host: '127.0.0.1', port }, { '/x': () => ({ body: 'two' }) });
    expect(second.unbound()).toEqual([]);
    const pids = new Set<string | undefined>();
    for (let i = 0; i < 64 && pids.size < 2; i++) pids.add((await fetchPid(port)).pid);
    expect([...pids].sort()).toEqual(['1', '2']);
  });

  it('reports an address it cannot bind, retries, and binds it once it is free', async () => {
    // Held without SO_REUSEPORT, as by a process of another kind.
    const held: Server = createServer();
    await new Promise<void>((r) => held.listen(0, '127.0.0.1', r));
    const port = (held.address() as AddressInfo).port;
    const e = new HttpEndpoints(log, { 'x-nodemesh-agent-pid': '7' });
    cleanup.push(() => e.close());
    await e.serve('metrics', { host: '127.0.0.1', port }, { '/x': () => ({ body: 'ok' }) });
    const [status] = e.unbound();
    expect(status).toMatchObject({ name: 'metrics', address: `127.0.0.1:${port}`, bound: false, attempts: 1 });
    expect(status!.error).toMatch(/EADDRINUSE/);
    await new Promise((r) => held.close(r));
    await waitUntil('the endpoint to be bound', () => e.unbound().length === 0);
    expect(e.status()[0]!.attempts).toBeGreaterThanOrEqual(2);
    expect(await fetchPid(port)).toEqual({ status: 200, pid: '7' });
  });
});

describe('enrollment failures', () => {
  /** A pod whose netns and cgroup paths exist (plain directories stand in for them here). */
  function setup(failListens: number) {
    const root = tmp('nm-enroll-');
    const podsDir = join(root, 'pods');
    const netns = join(root, 'netns');
    const cgroup = join(root, 'cgroup');
    mkdirSync(netns);
    mkdirSync(cgroup);
    const calls: string[] = [];
    let pinned = false;
    let fails = failListens;
    const redirect: RedirectBackend = {
      attachPod: async () => {
        calls.push('attach');
        pinned = true;
      },
      detachPod: async () => {
        calls.push('detach');
        pinned = false;
      },
      listPinnedPods: () => (pinned ? ['u1'] : []),
      podAttachment: () => (pinned ? { links: ['connect4'] } : null),
      registerInboundListener: () => {},
    };
    const proxy = {
      addPod: async () => {
        calls.push('listen');
        if (fails-- > 0) throw Object.assign(new Error('listening on 127.0.0.1:15001: EADDRINUSE'), { code: 'EADDRINUSE' });
      },
      removePod: async () => void calls.push('close'),
    } as unknown as NodeProxy;
    const recovered: string[] = [];
    const enroller = new Enroller({ redirect, proxy, podsDir, cgroupRoot: root, log, onRecovered: (p) => recovered.push(p.uid), retry: { firstMs: 10, maxMs: 40 } });
    cleanup.push(() => enroller.stop());
    const pod: EnrolledPod = {
      uid: 'u1', namespace: 'shop', name: 'backend', ip: '10.244.0.5', netnsPath: netns, cgroupPath: cgroup, containerId: 'c1',
      serviceAccount: 'backend', labels: {}, trustDomain: 'cluster.local', enrolledAt: '2026-01-01T00:00:00.000Z',
      exclusions: { excludeInboundPorts: [], excludeOutboundPorts: [], excludeOutboundCidrs: [] },
    };
    return { enroller, calls, recovered, pod, podsDir, pin: () => (pinned = true) };
  }

  it('never detaches a pod it adopts: it stays enrolled, is reported pending and is retried until it is served', async () => {
    const s = setup(3);
    s.pin(); // a previous agent enrolled it
    writeFileSync(join(s.podsDir, 'u1.json'), JSON.stringify(s.pod));
    const r = await s.enroller.adopt();
    expect(r).toEqual({ adopted: [], removed: [], pending: ['shop/backend'] });
    const [p] = s.enroller.pending();
    expect(p).toMatchObject({ uid: 'u1', pod: 'shop/backend', attempts: 1 });
    expect(p!.error).toMatch(/EADDRINUSE/);
    await waitUntil('the retry to succeed', () => s.recovered.length === 1);
    expect(s.calls.filter((c) => c === 'detach')).toEqual([]);
    expect(s.calls.filter((c) => c === 'listen')).toHaveLength(4);
    expect(s.enroller.pending()).toEqual([]);
    expect(s.enroller.pods().map((x) => x.uid)).toEqual(['u1']);
    expect(existsSync(join(s.podsDir, 'u1.json'))).toBe(true);
  });

  it('undoes a new pod whose enrollment fails, record included, and does not retry it', async () => {
    const s = setup(1);
    const { enrolledAt: _, cgroupPath: __, ...spec } = s.pod;
    await expect(s.enroller.enroll({ ...spec, cgroupPath: s.pod.cgroupPath })).rejects.toThrow(/EADDRINUSE/);
    expect(s.calls).toEqual(['listen']);
    expect(existsSync(join(s.podsDir, 'u1.json'))).toBe(false);
    expect(s.enroller.pending()).toEqual([]);
    // The positive twin: the same pod enrolls on the next ADD.
    await s.enroller.enroll({ ...spec, cgroupPath: s.pod.cgroupPath });
    expect(s.enroller.pods().map((x) => x.uid)).toEqual(['u1']);
  });
});
