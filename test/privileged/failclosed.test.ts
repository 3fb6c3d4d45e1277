// Fail closed, and the last good state survives restarts (issue 8), end to end with the real
// control plane, agents, eBPF and pods. The control plane is frozen with SIGSTOP (always
// resumed in a finally): its sockets stay open but it answers nothing, which is what an
// overloaded or partitioned control plane looks like. Every deny has its allowed twin.
import { spawn } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { controlPlaneFiles, pidIn } from '../../src/cluster/daemon.js';
import { curlIn, startNodeAgent, stopNodeAgent } from '../../src/cluster/nodes.js';
import { agentPid } from '../../src/cluster/up.js';
import { agentPaths } from '../../src/net/index.js';
import { clusterUp, type Cluster } from '../helpers/cluster.js';
import { cli, leftovers, meshUp, repoRoot, writeConfig, type Mesh } from '../helpers/mesh.js';
import { describePrivileged } from '../helpers/privileged.js';

/** Runs `fn` with the control plane of state dir `sd` stopped (SIGSTOP), and always resumes it. */
async function frozen<T>(sd: string, fn: () => Promise<T>): Promise<T> {
  const pid = pidIn(controlPlaneFiles(sd).pidFile);
  if (!pid) throw new Error('the control plane is not running');
  process.kill(pid, 'SIGSTOP');
  try {
    return await fn();
  } finally {
    process.kill(pid, 'SIGCONT');
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * demo/web's Service port is HTTP (appProtocol http): its proxy decides each request and answers
 * a denied one with Envoy's 403, where an L4 port resets the connection (the two-node suite below).
 */
const DENIED = '403';

/** One HTTP GET with curl: the status, "000" when the connection was refused or reset. */
function get(run: { exec: Mesh['exec'] }, pod: string, url: string): string {
  const r = run.exec(pod, ['curl', '-s', '-o', '/dev/null', '-w', '%{http_code}', '-m', '3', url], 15_000);
  return r.stdout.trim() || '000';
}

async function until(what: string, pred: () => boolean | Promise<boolean>, ms = 20_000): Promise<void> {
  const t0 = Date.now();
  while (Date.now() - t0 < ms) {
    if (await pred()) return;
    await sleep(100);
  }
  throw new Error(`timed out waiting for ${what}`);
}

const denyClient = `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: deny-client, namespace: demo }
spec:
  selector: { matchLabels: { app: web } }
  action: DENY
  rules:
  - from: [{ source: { principals: ["cluster.local/ns/demo/sa/client"] } }]
`;

// A second mesh client of demo/web that the DENY does not name: the allowed twin.
const shopper = `apiVersion: v1
kind: Pod
metadata: { name: shopper, namespace: demo, labels: { app: shopper } }
spec:
  serviceAccountName: shopper
  containers:
    - { name: c, command: [sleep, infinity] }
`;

describePrivileged('fail closed on one node (examples/demo)', () => {
  let mesh: Mesh;
  let dir: string;
  let web: string;
  const dump = async () => (await mesh.dump()) as unknown as { controlPlane: { connected: boolean; synced: boolean }; policies: { name: string }[]; certificates: { identity: string; state: string; serialNumber?: string }[] };

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'nm-e2e-failclosed-'));
    cpSync(join(repoRoot, 'examples', 'demo'), dir, { recursive: true });
    writeFileSync(join(dir, 'shopper.yaml'), shopper);
    writeFileSync(join(dir, 'deny.yaml'), denyClient);
    mesh = await meshUp(dir, { controlPlane: true });
    web = `http://${mesh.ip('demo/web')}:8080/`;
    await until('the DENY at the agent', async () => (await dump()).policies.some((p) => p.name === 'deny-client'));
  });

  afterAll(async () => {
    await mesh?.down();
    rmSync(dir, { recursive: true, force: true });
    expect(leftovers(...(mesh ? [mesh.pinRoot] : []))).toEqual([]);
  });

  it('keeps the DENY after an agent restart while the control plane is frozen, and the allowed pairs working', async () => {
    expect(get(mesh, 'demo/client', web)).toBe(DENIED);
    expect(get(mesh, 'demo/shopper', web)).toBe('200');
    const serials = Object.fromEntries((await dump()).certificates.map((c) => [c.identity, c.serialNumber]));
    const pidBefore = agentPid(mesh.sd);
    await frozen(mesh.sd, async () => {
      await mesh.stopAgent();
      // Ready at once: it serves the snapshot it saved (before, it waited for a sync that never came).
      await mesh.startAgent();
      expect(agentPid(mesh.sd)).not.toBe(pidBefore);
      const d = await dump();
      expect(d.controlPlane.synced).toBe(false);
      expect(get(mesh, 'demo/client', web)).toBe(DENIED);
      expect(get(mesh, 'demo/shopper', web)).toBe('200');
      // Plaintext from outside the mesh is still allowed (PERMISSIVE): policy, not a blanket deny.
      expect(get(mesh, 'legacy/legacy-client', web)).toBe('200');
      // The certificates are the ones saved, not new ones (the CA is frozen too).
      expect(Object.fromEntries(d.certificates.map((c) => [c.identity, c.serialNumber]))).toEqual(serials);
    });
    await until('the resync', async () => (await dump()).controlPlane.synced);
    expect(get(mesh, 'demo/client', web)).toBe(DENIED);
    expect(get(mesh, 'demo/shopper', web)).toBe('200');
  });

  it('keeps its state files private and never logs a key', () => {
    const { dir: agentDir, logFile } = agentPaths(mesh.sd);
    expect(statSync(join(agentDir, 'xds-snapshot.json')).mode & 0o777).toBe(0o600);
    const secrets = join(agentDir, 'secrets');
    expect(statSync(secrets).mode & 0o777).toBe(0o700);
    const files = readdirSync(secrets);
    expect(files.length).toBeGreaterThanOrEqual(3); // client, shopper, web, redis ... each its own
    for (const f of files) expect(statSync(join(secrets, f)).mode & 0o777).toBe(0o600);
    expect(readFileSync(join(secrets, files[0]!), 'utf8')).toMatch(/PRIVATE KEY/);
    expect(readFileSync(logFile, 'utf8')).not.toMatch(/PRIVATE KEY/);
  });

  it('survives a 60 s control-plane outage with zero failed allowed requests, and the DENY enforced throughout', async () => {
    const stop = join(dir, 'stop-loops');
    // Bounded loops inside the pods: every 200 ms from the allowed client, every second from
    // the denied one, until the stop file appears (or a hard cap of iterations).
    const loop = (pod: string, every: string, max: number): Promise<string[]> =>
      new Promise((resolve, reject) => {
        const script = `i=0; while [ ! -e ${stop} ] && [ $i -lt ${max} ]; do curl -s -o /dev/null -w '%{http_code}\\n' -m 2 ${web}; sleep ${every}; i=$((i+1)); done`;
        const child = spawn(cli, ['sim', 'exec', '--state-dir', mesh.sd, pod, '--', 'sh', '-c', script], { stdio: ['ignore', 'pipe', 'ignore'] });
        let out = '';
        child.stdout.on('data', (d: Buffer) => (out += d));
        child.on('error', reject);
        child.on('exit', () => resolve(out.split('\n').filter(Boolean)));
      });
    const allowed = loop('demo/shopper', '0.2', 600);
    const denied = loop('demo/client', '1', 120);
    try {
      await sleep(2000);
      await frozen(mesh.sd, () => sleep(60_000));
      await until('the resync after the outage', async () => (await dump()).controlPlane.synced, 30_000);
      await sleep(2000);
    } finally {
      writeFileSync(stop, '');
    }
    const ok = await allowed;
    const no = await denied;
    expect(ok.length).toBeGreaterThan(200); // the loop ran through the whole outage
    expect(ok.filter((c) => c !== '200')).toEqual([]);
    expect(no.length).toBeGreaterThan(40);
    expect(no.filter((c) => c !== DENIED)).toEqual([]);
  }, 150_000);
});

const twoNodes = (server: string) => `
apiVersion: v1
kind: Namespace
metadata: { name: mesh, labels: { nodemesh.io/dataplane-mode: ambient } }
---
apiVersion: v1
kind: Namespace
metadata: { name: plain }
---
apiVersion: v1
kind: Pod
metadata: { name: web-b, namespace: mesh, labels: { app: web } }
spec:
  nodeName: node-b
  serviceAccountName: web
  containers:
  - { name: s, command: [python3, -m, http.server, "8080", --bind, 0.0.0.0, --directory, ${server}], ports: [{ containerPort: 8080 }] }
---
apiVersion: v1
kind: Pod
metadata: { name: client, namespace: mesh }
spec:
  nodeName: node-a
  serviceAccountName: client
  containers: [{ name: c, command: [sleep, infinity] }]
---
apiVersion: v1
kind: Pod
metadata: { name: other, namespace: mesh }
spec:
  nodeName: node-a
  serviceAccountName: other
  containers: [{ name: c, command: [sleep, infinity] }]
---
apiVersion: v1
kind: Pod
metadata: { name: stranger, namespace: plain }
spec:
  nodeName: node-b
  containers: [{ name: c, command: [sleep, infinity] }]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: deny-other, namespace: mesh }
spec:
  selector: { matchLabels: { app: web } }
  action: DENY
  rules:
  - from: [{ source: { principals: ["cluster.local/ns/mesh/sa/other"] } }]
`;

describePrivileged('fail closed on two nodes: kubelet probes under STRICT, HBONE from disk', () => {
  let c: Cluster;
  let dir: string;
  let served: string;
  let pinRoots: string[] = [];
  let web: string;
  const synced = async (node: string) => ((await c.dump(node)) as { controlPlane: { synced: boolean } }).controlPlane.synced;
  const serials = async (node: string) =>
    Object.fromEntries(((await c.dump(node)) as { certificates: { identity: string; serialNumber?: string }[] }).certificates.map((x) => [x.identity, x.serialNumber]));

  beforeAll(async () => {
    served = mkdtempSync(join(tmpdir(), 'nm-e2e-www-'));
    dir = writeConfig(twoNodes(served));
    c = await clusterUp(dir);
    pinRoots = c.pinRoots;
    web = `http://${c.ip('mesh/web-b')}:8080/`;
  });

  afterAll(async () => {
    await c?.down();
    rmSync(dir, { recursive: true, force: true });
    rmSync(served, { recursive: true, force: true });
    expect(leftovers(...pinRoots)).toEqual([]);
  });

  it('lets the node\'s own plaintext (kubelet probes) reach a pod under STRICT, and refuses a plaintext pod', async () => {
    const node = c.node('node-b').netnsPath!;
    expect((await curlIn(node, web, 3)).code).toBe(0);
    expect(get(c, 'plain/stranger', web)).toBe('200'); // PERMISSIVE: plaintext allowed
    c.write('strict.yaml', `apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: { name: strict, namespace: mesh }
spec: { mtls: { mode: STRICT } }
`);
    try {
      await until('STRICT in force', () => get(c, 'plain/stranger', web) === '000');
      // The node itself: its socket holds the exact address pair, so it passes.
      expect((await curlIn(node, web, 3)).code).toBe(0);
      // A mesh client over HBONE passes; a plaintext pod on the same bridge does not.
      expect(get(c, 'mesh/client', web)).toBe('200');
      expect(get(c, 'plain/stranger', web)).toBe('000');
    } finally {
      rmSync(join(dir, 'strict.yaml'));
    }
    await until('STRICT lifted', () => get(c, 'plain/stranger', web) === '200');
  });

  it('serves the same policy and HBONE after both agents restart while the control plane is frozen', async () => {
    expect(get(c, 'mesh/client', web)).toBe('200');
    expect(get(c, 'mesh/other', web)).toBe('000');
    const before = { a: await serials('node-a'), b: await serials('node-b') };
    await frozen(c.sd, async () => {
      for (const n of ['node-a', 'node-b']) {
        expect(await stopNodeAgent(c.node(n))).toBe(true);
        await startNodeAgent(c.node(n), c.sd, dir);
      }
      expect(await synced('node-a')).toBe(false);
      expect(await synced('node-b')).toBe(false);
      // Cross-node HBONE: the client's certificate (node-a) and web's (node-b) come from disk.
      expect(get(c, 'mesh/client', web)).toBe('200');
      expect(get(c, 'mesh/other', web)).toBe('000');
      expect(await serials('node-a')).toEqual(before.a);
      expect(await serials('node-b')).toEqual(before.b);
    });
    await until('both agents resynced', async () => (await synced('node-a')) && (await synced('node-b')), 30_000);
    expect(get(c, 'mesh/client', web)).toBe('200');
    expect(get(c, 'mesh/other', web)).toBe('000');
    expect(existsSync(join(agentPaths(c.node('node-b').agentStateDir).dir, 'xds-snapshot.json'))).toBe(true);
  });
});

describe('failclosed helpers', () => {
  it('resumes a stopped process in frozen()\'s finally even when the body throws', async () => {
    const child = spawn('sleep', ['30'], { stdio: 'ignore' });
    const sd = mkdtempSync(join(tmpdir(), 'nm-frozen-'));
    try {
      const f = controlPlaneFiles(sd);
      mkdirSync(f.dir, { recursive: true });
      writeFileSync(f.pidFile, `${child.pid}\n`);
      // The state letter of /proc/<pid>/stat: T while stopped (signals land asynchronously).
      const state = () => readFileSync(`/proc/${child.pid}/stat`, 'utf8').split(' ')[2];
      await expect(frozen(sd, async () => {
        await until('the process stopped', () => state() === 'T', 5000);
        throw new Error('boom');
      })).rejects.toThrow('boom');
      await until('the process resumed', () => state() !== 'T', 5000);
    } finally {
      child.kill();
      rmSync(sd, { recursive: true, force: true });
    }
  });
});
