// Inbound delivery goes to the pod's own IP from the client's address (issue 8, repro 4): a
// service the pod binds to 127.0.0.1 stays private, the app sees the real client, and the
// in-pod routing that carries the replies is installed per enrolled pod and removed with it.
// Three setups: the Redirector on a namespace of its own (the routing's life cycle), the agent
// with simulated pods (same-node fast path, plaintext inbound), and two nodes (HBONE).
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, rmSync, rmdirSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { isNodemeshError } from '../../src/errors.js';
import { Redirector, findCgroup2Root } from '../../src/redirect/index.js';
import { ipv4Key } from '../../src/redirect/layout.js';
import { native, type NativeBinding } from '../../src/redirect/native.js';
import { kTestHooks } from '../../src/redirect/redirector.js';
import { INBOUND_DELIVERY, POD_LINK_NAMES } from '../../src/redirect/types.js';
import { listPods } from '../../src/sim/index.js';
import { clusterUp, type Cluster } from '../helpers/cluster.js';
import { fixtureBin, leftovers, meshUp, writeConfig, type Mesh } from '../helpers/mesh.js';
import { describePrivileged } from '../helpers/privileged.js';

const PID = process.pid;
const server = join(fixtureBin, 'nm_server.py');
const OUR_RULE = `${INBOUND_DELIVERY.rulePriority}:\tfrom all fwmark 0x539/0xfff lookup ${INBOUND_DELIVERY.table}`;
const OUR_ROUTE = 'local default dev lo scope host';

/** `ip` in the netns at path ('' for this process's own). */
function ipIn(netnsPath: string, ...args: string[]): string {
  if (!netnsPath) return execFileSync('ip', args, { encoding: 'utf8' });
  return execFileSync('nsenter', [`--net=${netnsPath}`, 'ip', ...args], { encoding: 'utf8' });
}

function lines(text: string): string[] {
  return text.split('\n').map((l) => l.trimEnd()).filter(Boolean);
}

/** The fwmark rules and the routes of our table in a netns. */
function routing(netnsPath: string): { rules: string[]; routes: string[] } {
  return {
    rules: lines(ipIn(netnsPath, 'rule', 'show')).filter((l) => l.includes('fwmark 0x539') || l.includes(`lookup ${INBOUND_DELIVERY.table}`)),
    // `table all` rather than `table 100`, which fails while the table was never created.
    routes: lines(ipIn(netnsPath, 'route', 'show', 'table', 'all'))
      .filter((l) => l.includes(` table ${INBOUND_DELIVERY.table} `))
      .map((l) => l.replace(` table ${INBOUND_DELIVERY.table}`, '')),
  };
}

/** net.ipv4.tcp_fwmark_accept and net.ipv4.fwmark_reflect as seen from inside a netns. */
function sysctls(netnsPath: string): { accept: string; reflect: string } {
  const read = (name: string) => execFileSync('nsenter', [`--net=${netnsPath}`, 'cat', `/proc/sys/net/ipv4/${name}`], { encoding: 'utf8' }).trim();
  return { accept: read('tcp_fwmark_accept'), reflect: read('fwmark_reflect') };
}

function hostSysctls(): { accept: string; reflect: string } {
  return {
    accept: readFileSync('/proc/sys/net/ipv4/tcp_fwmark_accept', 'utf8').trim(),
    reflect: readFileSync('/proc/sys/net/ipv4/fwmark_reflect', 'utf8').trim(),
  };
}

/** A denied or failed connection: the proxy resets it (ENOTCONN when the reset beats the first send). */
function refused(r: Record<string, unknown>): boolean {
  return r.outcome === 'reset' || r.outcome === 'error:107:Transport endpoint is not connected';
}

/** "local peer" from nm_server's WHO reply. */
function who(r: Record<string, unknown>): { local: string; peerIp: string } {
  const [local, peer] = String(r.reply ?? '').split(' ');
  return { local: local ?? '', peerIp: (peer ?? '').split(':')[0] ?? '' };
}

describePrivileged('in-pod delivery routing, per pod (Redirector)', () => {
  const ns = `nmt-${PID}-deliv`;
  const netnsPath = `/run/netns/${ns}`;
  const pinRoot = `/sys/fs/bpf/nmt-deliv-${PID}`;
  const cgTest = join(findCgroup2Root(), `nodemesh-test-deliv-${PID}`);
  const cg = join(cgTest, 'podd');
  const spec = { uid: 'deliv-d', cgroupPath: cg, netnsPath, ip: '10.250.7.2' };
  const hostBefore = hostSysctls();
  let r: Redirector;

  beforeAll(async () => {
    execFileSync('ip', ['netns', 'add', ns]);
    ipIn(netnsPath, 'link', 'set', 'lo', 'up');
    mkdirSync(cg, { recursive: true });
    r = await Redirector.open({ pinRoot });
  });

  afterAll(async () => {
    r?.close();
    await Redirector.destroyAll(pinRoot);
    execFileSync('ip', ['netns', 'del', ns]);
    rmdirSync(cg);
    rmdirSync(cgTest);
    expect(hostSysctls()).toEqual(hostBefore);
    expect(routing('').rules).toEqual([]);
  });

  it('installs the rule, the local route and the two sysctls in the pod netns at attach, and nothing on the host', async () => {
    // The pod set fwmark_reflect itself before enrollment: detach must give it back.
    execFileSync('nsenter', [`--net=${netnsPath}`, 'sysctl', '-qw', 'net.ipv4.fwmark_reflect=1']);
    expect(routing(netnsPath)).toEqual({ rules: [], routes: [] });
    expect(sysctls(netnsPath)).toEqual({ accept: '0', reflect: '1' });

    await r.attachPod(spec);
    expect(routing(netnsPath)).toEqual({ rules: [OUR_RULE], routes: [OUR_ROUTE] });
    expect(sysctls(netnsPath)).toEqual({ accept: '1', reflect: '1' });
    expect(routing('')).toEqual({ rules: [], routes: [] });
    expect(hostSysctls()).toEqual(hostBefore);
  });

  it('adds nothing twice when the pod is attached again', async () => {
    await r.attachPod(spec);
    expect(routing(netnsPath)).toEqual({ rules: [OUR_RULE], routes: [OUR_ROUTE] });
  });

  it("removes exactly its rule and route at detach, keeps the pod's own, and writes the sysctls back", async () => {
    ipIn(netnsPath, 'rule', 'add', 'fwmark', '0x7', 'lookup', '200', 'pref', '1000');
    await r.detachPod(spec.uid, spec.ip);
    expect(routing(netnsPath)).toEqual({ rules: [], routes: [] });
    expect(ipIn(netnsPath, 'rule', 'show')).toMatch(/^1000:\tfrom all fwmark 0x7 lookup 200/m);
    expect(sysctls(netnsPath)).toEqual({ accept: '0', reflect: '1' });
    ipIn(netnsPath, 'rule', 'del', 'pref', '1000');
  });

  it('keeps the routing of an adopted pod, and the adopting agent removes it at detach', async () => {
    execFileSync('nsenter', [`--net=${netnsPath}`, 'sysctl', '-qw', 'net.ipv4.fwmark_reflect=0']);
    await r.attachPod(spec);
    r.close();
    r = await Redirector.open({ pinRoot });
    // The new agent finds the routing in place (nothing was torn down with the old one).
    expect(routing(netnsPath)).toEqual({ rules: [OUR_RULE], routes: [OUR_ROUTE] });
    await r.attachPod(spec);
    expect(routing(netnsPath)).toEqual({ rules: [OUR_RULE], routes: [OUR_ROUTE] });
    await r.detachPod(spec.uid, spec.ip);
    expect(routing(netnsPath)).toEqual({ rules: [], routes: [] });
    expect(sysctls(netnsPath)).toEqual({ accept: '0', reflect: '0' });
  });

  it('fails closed when the routing cannot be installed: the error says so and the pod stays enrolled (SYNs dropped)', async () => {
    // Nothing on this machine makes rtnetlink refuse root, so the addon call is made to fail.
    const binding: NativeBinding = native();
    const real = binding.installDeliveryRouting;
    binding.installDeliveryRouting = () => Promise.reject(Object.assign(new Error('rtnetlink: Operation not permitted'), { errno: -1, code: 'EPERM', syscall: 'rtnetlink' }));
    let err: unknown;
    try {
      await r.attachPod(spec);
    } catch (e) {
      err = e;
    } finally {
      binding.installDeliveryRouting = real;
    }
    expect(isNodemeshError(err) && err.code).toBe('NM_ERR_ENROLL');
    expect((err as { details: { step?: string } }).details.step).toBe('delivery-routing');
    expect(routing(netnsPath)).toEqual({ rules: [], routes: [] });
    // Still enrolled: links pinned, nm_enrolled holds the IP, and with no listener sk_lookup drops.
    expect(r.podAttachment(spec.uid)?.links).toEqual([...POD_LINK_NAMES]);
    const hooks = r[kTestHooks]();
    expect(hooks.binding.mapLookup(hooks.mapFd('nm_enrolled'), ipv4Key(spec.ip))).not.toBeNull();
    const ctx = Buffer.alloc(72);
    ctx.writeUInt32LE(2, 8); // AF_INET
    ctx.writeUInt32LE(6, 12); // TCP
    Buffer.from([10, 250, 7, 99]).copy(ctx, 16);
    ctx.writeUInt16BE(40000, 36);
    Buffer.from(spec.ip.split('.').map(Number)).copy(ctx, 40);
    ctx.writeUInt32LE(8080, 60);
    const run = await hooks.binding.progTestRun(hooks.progFd('nm_sk_lookup'), { ctxIn: ctx, ctxOutSize: 72 });
    expect(run.retval).toBe(0); // SK_DROP

    // The positive twin: the same attach with a working addon installs everything.
    await r.attachPod(spec);
    expect(routing(netnsPath)).toEqual({ rules: [OUR_RULE], routes: [OUR_ROUTE] });
    await r.detachPod(spec.uid, spec.ip);
    expect(routing(netnsPath)).toEqual({ rules: [], routes: [] });
  });
});

const sameNodeConfig = `
apiVersion: v1
kind: Namespace
metadata: { name: deliv, labels: { nodemesh.io/dataplane-mode: ambient } }
---
apiVersion: v1
kind: Namespace
metadata: { name: outside }
---
apiVersion: v1
kind: Pod
metadata: { name: web, namespace: deliv, labels: { app: web } }
spec:
  containers:
  - { name: s, command: [python3, ${server}, "9998,127.0.0.1:9999"], ports: [{ containerPort: 9998 }] }
---
apiVersion: v1
kind: Pod
metadata: { name: client, namespace: deliv }
spec:
  containers:
  - { name: c, command: [sleep, infinity] }
---
apiVersion: v1
kind: Pod
metadata: { name: legacy, namespace: outside }
spec:
  containers:
  - { name: c, command: [sleep, infinity] }
`;

describePrivileged('inbound delivery to the pod IP from the client address (agent, one node)', () => {
  let mesh: Mesh;
  let dir: string;
  let down = false;
  const hostBefore = hostSysctls();
  const call = (from: string, port: number, ip = mesh.ip('deliv/web')) => mesh.client(from, ['who', ip, String(port)]);

  beforeAll(async () => {
    dir = writeConfig(sameNodeConfig);
    mesh = await meshUp(dir);
  });

  afterAll(async () => {
    if (!down) await mesh?.down();
    rmSync(dir, { recursive: true, force: true });
    expect(leftovers(...(mesh ? [mesh.pinRoot] : []))).toEqual([]);
  });

  it('keeps a service bound to 127.0.0.1 private: neither a mesh client nor a pod outside the mesh reaches it; 0.0.0.0 is reached by both', async () => {
    const web = mesh.ip('deliv/web');
    // The private service is up: the pod itself reaches it.
    expect(who(mesh.client('deliv/web', ['who', '127.0.0.1', '9999'])).local).toBe('127.0.0.1:9999');
    for (const from of ['deliv/client', 'outside/legacy']) {
      const r = call(from, 9999);
      expect(refused(r), `${from} -> ${web}:9999: ${JSON.stringify(r)}`).toBe(true);
      expect(r.reply).toBeUndefined();
      // The positive twin, same pod, same client: the service bound to every address.
      expect(who(call(from, 9998)).local).toBe(`${web}:9998`);
    }
    // The proxy connected to the pod's IP and the pod's kernel refused it (no listener there).
    const failed = (await mesh.flows()).filter((f) => f.direction === 'inbound' && f.originalDst === `${web}:9999`);
    expect(failed.map((f) => [f.upstream, f.responseFlags])).toEqual([
      [`${web}:9999`, 'UF,URX'],
      [`${web}:9999`, 'UF,URX'],
    ]);
  });

  it("shows the app the client's pod IP as its peer, on the same-node fast path and for plaintext inbound", async () => {
    const web = mesh.ip('deliv/web');
    const before = (await mesh.flows()).length;
    expect(who(call('deliv/client', 9998)).peerIp).toBe(mesh.ip('deliv/client'));
    expect(who(call('outside/legacy', 9998)).peerIp).toBe(mesh.ip('outside/legacy'));
    // The pod calling its own IP: captured, handed to its own inbound, delivered once.
    expect(who(call('deliv/web', 9998))).toEqual({ local: `${web}:9998`, peerIp: web });
    const flows = (await mesh.flows()).slice(before);
    // The mesh client took the in-process fast path; the pod outside the mesh came in on 15006.
    const fromClient = flows.filter((f) => f.src.ip === mesh.ip('deliv/client'));
    expect(fromClient.map((f) => f.direction).sort()).toEqual(['inbound', 'outbound']);
    expect(fromClient.find((f) => f.direction === 'outbound')!.upstream).toMatch(/same node, in process/);
    const fromLegacy = flows.filter((f) => f.src.ip === mesh.ip('outside/legacy'));
    expect(fromLegacy.map((f) => [f.direction, f.upstream])).toEqual([['inbound', `${web}:9998`]]);
  });

  it('relays 8 MB each way byte-exact with half-close through the delivery socket', async () => {
    const n = 8 * 1024 * 1024;
    for (const from of ['deliv/client', 'outside/legacy']) {
      const r = mesh.client(from, ['bulk', mesh.ip('deliv/web'), '9998', String(n)], 120_000);
      expect(r.server_count, from).toBe(n);
      expect(r.server_sha).toBe(r.expect_up_sha);
      expect(r.client_count).toBe(n);
      expect(r.client_sha).toBe(r.expect_down_sha);
    }
  });

  it('installs the routing in enrolled pods only, and leaves none of it behind at down', async () => {
    const pods = new Map(listPods({ stateDir: mesh.sd }).map((p) => [`${p.namespace}/${p.name}`, p.netnsPath]));
    for (const p of ['deliv/web', 'deliv/client']) {
      expect(routing(pods.get(p)!), p).toEqual({ rules: [OUR_RULE], routes: [OUR_ROUTE] });
      expect(sysctls(pods.get(p)!)).toEqual({ accept: '1', reflect: '1' });
    }
    expect(routing(pods.get('outside/legacy')!)).toEqual({ rules: [], routes: [] });
    expect(routing('')).toEqual({ rules: [], routes: [] });
    expect(hostSysctls()).toEqual(hostBefore);

    down = true;
    await mesh.down();
    expect(leftovers(...(mesh ? [mesh.pinRoot] : []))).toEqual([]);
    expect(routing('')).toEqual({ rules: [], routes: [] });
    expect(hostSysctls()).toEqual(hostBefore);
  });
});

const twoNodeConfig = `
apiVersion: v1
kind: Namespace
metadata: { name: deliv, labels: { nodemesh.io/dataplane-mode: ambient } }
---
apiVersion: v1
kind: Pod
metadata: { name: web, namespace: deliv, labels: { app: web } }
spec:
  nodeName: node-b
  serviceAccountName: web
  containers:
  - { name: s, command: [python3, ${server}, "9998,127.0.0.1:9999"], ports: [{ containerPort: 9998 }] }
---
apiVersion: v1
kind: Pod
metadata: { name: client, namespace: deliv }
spec:
  nodeName: node-a
  serviceAccountName: client
  containers:
  - { name: c, command: [sleep, infinity] }
`;

describePrivileged('inbound delivery over HBONE (two nodes)', () => {
  let c: Cluster;
  let dir: string;

  beforeAll(async () => {
    dir = writeConfig(twoNodeConfig);
    c = await clusterUp(dir);
  });

  afterAll(async () => {
    await c?.down();
    rmSync(dir, { recursive: true, force: true });
    expect(leftovers(...(c?.pinRoots ?? []))).toEqual([]);
  });

  it("delivers to the pod's IP from the source pod's IP, and keeps 127.0.0.1 private", async () => {
    const web = c.ip('deliv/web');
    const ok = c.client('deliv/client', ['who', web, '9998']);
    expect(who(ok)).toEqual({ local: `${web}:9998`, peerIp: c.ip('deliv/client') });
    const priv = c.client('deliv/client', ['who', web, '9999']);
    expect(refused(priv), JSON.stringify(priv)).toBe(true);
    const inbound = (await c.flows('node-b')).filter((f) => f.direction === 'inbound' && f.src.ip === c.ip('deliv/client'));
    expect(inbound.map((f) => [f.dst.port, f.upstream, f.hbone !== undefined, f.responseFlags])).toEqual([
      [9998, `${web}:9998`, true, '-'],
      [9999, `${web}:9999`, true, 'UF,URX'],
    ]);
  });
});
