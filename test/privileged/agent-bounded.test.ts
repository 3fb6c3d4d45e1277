// The agent's bounded state, end to end on examples/demo with the control plane: the kernel's
// original-destination maps are exported on :15020 and in /config_dump (capacity, quota, each
// pod's open connections, what was captured), and a workload identity's certificate and file
// are forgotten when its last pod leaves (a CNI DEL) while the other pods' stay.
import { existsSync, rmSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { secretFileName } from '../../src/identity/secret-store.js';
import { agentPaths, PORTS } from '../../src/net/index.js';
import { leftovers, meshUp, repoRoot, type Mesh } from '../helpers/mesh.js';
import { describePrivileged } from '../helpers/privileged.js';

const METRICS = `http://127.0.0.1:${PORTS.metrics}/metrics`;

interface Dump {
  pods: { uid: string; namespace: string; name: string; identity: string }[];
  certificates: { identity: string; state: string }[];
  kernel: { origDst: { capacity: number; podQuota: number; entries: number; counters: Record<string, number>; pods: { pod: string; entries: number }[] } | null };
}

/** One request on the agent's CNI socket, as the nodemesh-cni plugin sends it; the answer. */
function cni(socket: string, req: object): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = connect(socket);
    let out = '';
    s.on('data', (d: Buffer) => (out += d.toString()));
    s.on('end', () => resolve(out));
    s.on('error', reject);
    s.end(JSON.stringify(req));
  });
}

async function until<T>(what: string, get: () => Promise<T>, ok: (v: T) => boolean): Promise<T> {
  for (let i = 0; i < 100; i++) {
    const v = await get();
    if (ok(v)) return v;
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`timed out waiting for ${what}`);
}

describePrivileged('the agent keeps its state bounded and shows it', () => {
  let mesh: Mesh;
  let web: string;
  let nginxTempDirs: string[] = [];
  let before: string[] = [];
  const dump = () => mesh.dump() as unknown as Promise<Dump>;
  const curl = (from: string): string => {
    const r = mesh.exec(from, ['curl', '-sS', '-o', '/dev/null', '-w', '%{http_code}', '--max-time', '10', `http://${web}:8080/`], 30_000);
    return r.code === 0 ? r.stdout : `curl exit ${r.code}: ${r.stderr.trim()}`;
  };

  beforeAll(async () => {
    nginxTempDirs = ['body', 'proxy', 'fastcgi', 'uwsgi', 'scgi'].map((k) => `/tmp/nodemesh-demo-web-${k}`).filter((d) => !existsSync(d));
    before = leftovers();
    mesh = await meshUp(join(repoRoot, 'examples', 'demo'), { controlPlane: true });
    web = mesh.ip('demo/web');
  });

  afterAll(async () => {
    await mesh?.down();
    for (const d of nginxTempDirs) rmSync(d, { recursive: true, force: true });
    if (mesh) expect(leftovers(mesh.pinRoot).filter((l) => !before.includes(l))).toEqual([]);
  });

  it('exports the original-destination maps: capacity, quota, and what a pod\'s captured connections did', async () => {
    const d0 = await dump();
    expect(d0.kernel.origDst).toMatchObject({ capacity: 65536, podQuota: 16384 });
    expect(curl('demo/client')).toBe('200');
    const d1 = await until('the connection to be counted and closed', dump, (d) => d.kernel.origDst!.counters.closed > d0.kernel.origDst!.counters.closed);
    const o = d1.kernel.origDst!;
    expect(o.counters.captured).toBeGreaterThan(d0.kernel.origDst!.counters.captured);
    expect(o.counters.established).toBeGreaterThan(d0.kernel.origDst!.counters.established);
    expect(o.counters.recordFailed + o.counters.evictedCookie + o.counters.evictedOrig + o.counters.quotaRefused).toBe(0);
    expect(o.pods.map((p) => p.pod)).toContain('demo/client');

    const text = await (await fetch(METRICS)).text();
    expect(text).toMatch(/^nodemesh_orig_dst_capacity 65536$/m);
    expect(text).toMatch(/^nodemesh_orig_dst_pod_quota 16384$/m);
    expect(text).toMatch(/^nodemesh_orig_dst_entries \d+$/m);
    expect(text).toMatch(/^nodemesh_orig_dst_pod_entries\{pod="demo\/client"\} \d+$/m);
    expect(text).toMatch(/^nodemesh_orig_dst_evictions_total\{map="nm_orig_dst"\} 0$/m);
  });

  it('forgets the certificate and file of an identity whose last pod left, and keeps the other pods\'', async () => {
    const d = await until('every pod certificate', dump, (x) => x.pods.every((p) => x.certificates.some((c) => c.identity === p.identity && c.state === 'ready')));
    const redis = d.pods.find((p) => p.namespace === 'demo' && p.name === 'redis')!;
    const others = d.pods.filter((p) => p.uid !== redis.uid).map((p) => p.identity);
    expect(others.length).toBeGreaterThan(0);
    const secrets = join(agentPaths(mesh.sd).dir, 'secrets');
    const file = (id: string) => join(secrets, secretFileName(id));
    expect(existsSync(file(redis.identity))).toBe(true);

    const answer = await cni(agentPaths(mesh.sd).cniSocket, {
      command: 'DEL', containerId: 'test-del', netns: '', ifName: 'eth0', config: {},
      args: `K8S_POD_NAMESPACE=demo;K8S_POD_NAME=redis;K8S_POD_UID=${redis.uid}`,
    });
    expect(answer.startsWith('OK')).toBe(true);
    const after = await until('the redis certificate to be forgotten', dump, (x) => !x.certificates.some((c) => c.identity === redis.identity));
    expect(existsSync(file(redis.identity))).toBe(false);
    // The twin: every other pod keeps its certificate, in memory and on disk, and still works.
    for (const id of others) {
      expect(after.certificates.map((c) => c.identity)).toContain(id);
      expect(existsSync(file(id))).toBe(true);
    }
    expect(curl('demo/client')).toBe('200');
  });
});
