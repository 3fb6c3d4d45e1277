// Per-node trust on a real two-node cluster as `nodemesh up` runs it: each agent holds its own
// node's token, and a process on node-a holding node-a's token (what a compromised node has)
// cannot report node-b's pods, claim an IP outside node-a's pod CIDR, pass itself off as
// node-b, or get node-b's identities signed, while node-a's own requests in the same calls
// work. A control-plane restart withdraws nothing, and its /debug pages need the admin token
// from anywhere but loopback.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { controlPlaneDir } from '../../src/cluster/daemon.js';
import { nodeTokenFile } from '../../src/cluster/node-tokens.js';
import { CLUSTER_CP_ADDRESS, CLUSTER_NETNS_PATH, nodeAgentPid, startClusterControlPlane } from '../../src/cluster/nodes.js';
import { down, stopControlPlane } from '../../src/cluster/up.js';
import { nsenter } from '../../src/sim/index.js';
import { clusterUp, controlPlaneLog, type Cluster } from '../helpers/cluster.js';
import { fixtureBin, leftovers, repoRoot, writeConfig } from '../helpers/mesh.js';
import { describePrivileged } from '../helpers/privileged.js';

const server = join(fixtureBin, 'nm_server.py');

const pod = (name: string, node: string, container: string) => `---
apiVersion: v1
kind: Pod
metadata: { name: ${name}, namespace: mesh }
spec:
  nodeName: ${node}
  serviceAccountName: ${name}
  containers:
  - ${container}
`;
const web = `{ name: s, command: [python3, ${server}, "8080"], ports: [{ containerPort: 8080 }] }`;

const config = `apiVersion: v1
kind: Namespace
metadata: { name: mesh, labels: { nodemesh.io/dataplane-mode: ambient } }
${pod('web-a', 'node-a', web)}${pod('web-b', 'node-b', web)}${pod('client', 'node-a', '{ name: c, command: [sleep, infinity] }')}`;

/**
 * What a process on a node runs against the control plane with that node's token file: one
 * pod status report, then one CSR per identity. Prints one JSON line. It uses the built dist/
 * clients, the same ones the agent uses.
 */
const CALLER = `
import { readFileSync } from 'node:fs';
const [dist, specJson] = process.argv.slice(2);
const { PodStatusClient } = await import(dist + '/xds/index.js');
const { CaClient, createCsr, generateKeyPair } = await import(dist + '/identity/index.js');
const spec = JSON.parse(specJson);
const conn = { address: spec.address, rootCertPem: readFileSync(spec.rootCert), token: readFileSync(spec.tokenFile, 'utf8').trim(), nodeName: spec.node };
const err = (e) => ({ code: e.code, grpcCode: e.details?.grpcCode, message: e.message });
const out = { csr: {} };
const ps = new PodStatusClient(conn);
if (spec.pods) out.report = await ps.report(spec.pods).catch((e) => ({ error: err(e) }));
ps.close();
const ca = new CaClient(conn);
for (const sa of spec.csrs ?? []) {
  const csr = await createCsr(await generateKeyPair(), 'spiffe://cluster.local/ns/mesh/sa/' + sa);
  out.csr[sa] = await ca.createCertificate(csr, 600).then((chain) => ({ signed: chain.length }), (e) => ({ error: err(e) }));
}
ca.close();
process.stdout.write(JSON.stringify(out) + '\\n');
`;

interface CallResult {
  report?: { accepted: number; unknown: string[]; refused: string[] } | { error: { code: string; grpcCode: number; message: string } };
  csr: Record<string, { signed: number } | { error: { code: string; grpcCode: number; message: string } }>;
}

/** HTTP status of a GET run with curl inside a netns (0 when curl could not connect). */
function httpStatus(netnsPath: string, url: string, headers: string[] = []): { status: number; body: string } {
  const r = spawnSync(nsenter(), [`--net=${netnsPath}`, '--', 'curl', '-s', '-m', '5', '-w', '\n%{http_code}', ...headers.flatMap((h) => ['-H', h]), url], { encoding: 'utf8' });
  const lines = (r.stdout ?? '').split('\n');
  return { status: Number(lines.at(-1)) || 0, body: lines.slice(0, -1).join('\n') };
}

describePrivileged('per-node trust on two nodes', () => {
  let c: Cluster;
  let dir: string;
  let scratch: string;
  let pinRoots: string[] = [];

  /** Runs CALLER inside `onNode`'s netns with `tokenOf`'s token file, claiming node `claim`. */
  const call = (onNode: string, spec: { tokenOf: string; claim: string; pods?: unknown[]; csrs?: string[] }): CallResult => {
    const n = c.node(onNode);
    const body = { address: CLUSTER_CP_ADDRESS, rootCert: join(controlPlaneDir(c.sd), 'root-cert.pem'), tokenFile: nodeTokenFile(c.node(spec.tokenOf).agentStateDir), node: spec.claim, pods: spec.pods, csrs: spec.csrs };
    const r = spawnSync(nsenter(), [`--net=${n.netnsPath!}`, '--', process.execPath, join(scratch, 'caller.mjs'), join(repoRoot, 'dist'), JSON.stringify(body)], { encoding: 'utf8', timeout: 30_000 });
    const line = (r.stdout ?? '').trim().split('\n').at(-1) ?? '';
    try {
      return JSON.parse(line) as CallResult;
    } catch {
      throw new Error(`the caller on ${onNode} printed no result (exit ${r.status}): ${r.stdout}${r.stderr}`);
    }
  };
  /** Whether `from` gets web's WHO answer from `to`'s port 8080 (over HBONE when on another node). */
  const reaches = (from: string, to: string): boolean => String(c.client(from, ['who', c.ip(to), '8080']).reply ?? '').length > 0;
  /** node-a's pods as node-a's agent reports them (so a test report changes nothing real). */
  const ownPodsOfA = async () => (await c.pods()).filter((p) => p.node === 'node-a').map((p) => ({ uid: '', namespace: p.namespace, name: p.name, ip: p.ip, phase: 'Running' }));
  const served = async () => {
    const r = httpStatus(CLUSTER_NETNS_PATH, `http://127.0.0.1:15014/debug/resources`);
    expect(r.status).toBe(200);
    return Object.fromEntries((JSON.parse(r.body) as { workloads: { name: string; node: string; addresses: string[] }[] }).workloads.map((w) => [w.name, `${w.node} ${w.addresses.join(',')}`]));
  };

  beforeAll(async () => {
    dir = writeConfig(config);
    scratch = mkdtempSync(join(tmpdir(), 'nm-node-trust-'));
    writeFileSync(join(scratch, 'caller.mjs'), CALLER);
    const before = new Set(readdirSync(tmpdir()));
    try {
      c = await clusterUp(dir);
    } catch (e) {
      // clusterUp made its state dir and failed half way: take down what it started.
      for (const d of readdirSync(tmpdir()).filter((x) => x.startsWith('nm-e2e-cluster-') && !before.has(x))) {
        await down(join(tmpdir(), d));
        rmSync(join(tmpdir(), d), { recursive: true, force: true });
      }
      throw e;
    }
    pinRoots = c.pinRoots;
  });

  afterAll(async () => {
    // Never leave an agent stopped, whatever a test did.
    for (const n of c?.nodes ?? []) {
      const pid = nodeAgentPid(n);
      if (pid) process.kill(pid, 'SIGCONT');
    }
    await c?.down();
    rmSync(dir, { recursive: true, force: true });
    rmSync(scratch, { recursive: true, force: true });
    expect(leftovers(...pinRoots)).toEqual([]);
  });

  it('gives each agent its own node token, with which its pods get certificates and cross-node traffic flows', async () => {
    const [fa, fb] = ['node-a', 'node-b'].map((n) => nodeTokenFile(c.node(n).agentStateDir));
    expect(statSync(fa!).mode & 0o777).toBe(0o600);
    expect(readFileSync(fa!, 'utf8')).not.toBe(readFileSync(fb!, 'utf8'));
    const b = (await c.dump('node-b')) as { certificates: { identity: string; state: string }[] };
    expect(b.certificates.map((x) => x.identity)).toContain('spiffe://cluster.local/ns/mesh/sa/web-b');
    expect(reaches('mesh/client', 'mesh/web-b')).toBe(true);
  });

  it("refuses node-a's report about node-b's pod and an IP outside node-a's pod CIDR, and takes node-a's own entries of the same report", async () => {
    const own = await ownPodsOfA();
    const outside = c.node('node-b').subnet.replace(/0\/24$/, '77');
    const spoof = [
      ...own,
      { uid: '', namespace: 'mesh', name: 'web-b', ip: own[0]!.ip, phase: 'Running' }, // steal web-b's traffic to a node-a address
      { uid: '', namespace: 'mesh', name: 'ghost', ip: outside, phase: 'Running' }, // an address of node-b's range
    ];
    const r = call('node-a', { tokenOf: 'node-a', claim: 'node-a', pods: spoof });
    expect(r.report).toMatchObject({ accepted: own.length, refused: [expect.stringMatching(/^mesh\/web-b: the config places this pod on node node-b/), expect.stringMatching(/^mesh\/ghost: ip .* is outside node node-a's pod CIDRs/)] });
    // web-b is still served where it runs, with its own IP, and still answers.
    const now = await served();
    expect(now['web-b']).toBe(`node-b ${c.ip('mesh/web-b')}`);
    expect(now['web-a']).toBe(`node-a ${c.ip('mesh/web-a')}`);
    expect(reaches('mesh/client', 'mesh/web-b')).toBe(true);
    const log = controlPlaneLog(c.sd);
    expect(log).toMatch(/"node":"node-a","pod":"mesh\/web-b".*"msg":"refused a pod status entry"/);
    expect(log).toMatch(/"node":"node-a","pod":"mesh\/ghost".*"msg":"refused a pod status entry"/);
  });

  it("refuses node-a's token claiming to be node-b, and a CSR for node-b's identity; signs node-a's own", async () => {
    const asB = call('node-a', { tokenOf: 'node-a', claim: 'node-b', pods: [], csrs: ['web-b'] });
    expect(asB.report).toMatchObject({ error: { grpcCode: 7 } });
    expect(asB.csr['web-b']).toMatchObject({ error: { grpcCode: 7 } });
    const asA = call('node-a', { tokenOf: 'node-a', claim: 'node-a', csrs: ['web-b', 'web-a', 'client'] });
    expect(asA.csr).toMatchObject({ 'web-b': { error: { code: 'NM_ERR_CA', grpcCode: 7 } }, 'web-a': { signed: 2 }, client: { signed: 2 } });
    expect(controlPlaneLog(c.sd)).toMatch(/"node":"node-a","claimedNode":"node-b".*"msg":"refused a pod status report"/);
  });

  it('withdraws nothing across a control-plane restart, and shows /debug off loopback only with the admin token', async () => {
    const before = await served();
    expect(Object.keys(before).sort()).toEqual(['client', 'web-a', 'web-b']);
    // Freeze both agents so no node can report again before the check.
    const pids = c.nodes.map((n) => nodeAgentPid(n)!);
    for (const pid of pids) process.kill(pid, 'SIGSTOP');
    try {
      await stopControlPlane(c.sd);
      // The admin on every address of the cluster netns, as a Deployment binds it for its probe.
      await startClusterControlPlane(c.dir, c.sd, ['--admin', '0.0.0.0:15014']);
      expect(await served()).toEqual(before);
      const remote = c.node('node-a').netnsPath!;
      const url = `http://${CLUSTER_CP_ADDRESS.split(':')[0]}:15014`;
      expect(httpStatus(remote, `${url}/healthz/ready`).status).toBe(200);
      const refused = httpStatus(remote, `${url}/debug/resources`);
      expect(refused.status).toBe(401);
      expect(refused.body).not.toContain('web-b');
      expect(httpStatus(remote, `${url}/debug/resources`, ['authorization: Bearer not-the-admin-token']).status).toBe(401);
      const token = readFileSync(join(controlPlaneDir(c.sd), 'admin-token'), 'utf8').trim();
      const allowed = httpStatus(remote, `${url}/debug/resources`, [`authorization: Bearer ${token}`]);
      expect(allowed.status).toBe(200);
      expect(allowed.body).toContain(c.ip('mesh/web-b'));
    } finally {
      for (const pid of pids) process.kill(pid, 'SIGCONT');
    }
    // The agents carry on against the restarted control plane.
    expect(reaches('mesh/client', 'mesh/web-b')).toBe(true);
  });
});
