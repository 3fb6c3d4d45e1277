// End to end on one simulated node: real CNI pods, the agent as a process, eBPF capture into
// the shared proxy, and real clients inside pods.
import { afterAll, beforeAll, expect, it } from 'vitest';
import { join } from 'node:path';
import { describePrivileged } from '../helpers/privileged.js';
import { fixtureBin, ipForward, leftovers, meshUp, writeConfig, type Mesh } from '../helpers/mesh.js';

const server = join(fixtureBin, 'nm_server.py');
const PORTS = [80, 5432, 8080, 9090, 31000];

const config = `
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
metadata: { name: server, namespace: mesh, labels: { app: server } }
spec:
  serviceAccountName: server-sa
  containers:
  - name: s
    command: [python3, ${server}, "${PORTS.join(',')}"]
    ports: [{ containerPort: 8080 }]
---
apiVersion: v1
kind: Pod
metadata: { name: client, namespace: mesh, labels: { app: client } }
spec:
  containers:
  - name: c
    command: [python3, ${server}, "7070"]
    ports: [{ containerPort: 7070 }]
---
apiVersion: v1
kind: Pod
metadata: { name: outsider, namespace: plain, labels: { app: outsider } }
spec:
  containers:
  - name: c
    command: [python3, ${server}, "8080"]
    ports: [{ containerPort: 8080 }]
`;

describePrivileged('capture on one node', () => {
  let mesh: Mesh;
  const forwardBefore = ipForward();

  beforeAll(async () => {
    mesh = await meshUp(writeConfig(config));
  });

  afterAll(async () => {
    await mesh?.down();
    expect(leftovers(...(mesh ? [mesh.pinRoot] : []))).toEqual([]);
    expect(ipForward()).toBe(forwardBefore);
  });

  it('enrolls only pods labelled ambient (directly or by namespace)', async () => {
    const dump = await mesh.dump();
    expect(dump.pods.map((p) => `${p.namespace}/${p.name}`).sort()).toEqual(['mesh/client', 'mesh/server']);
  });

  it('captures an enrolled client on many ports, with the right original destination and source pod', async () => {
    const sip = mesh.ip('mesh/server');
    for (const port of PORTS) {
      const r = mesh.client('mesh/client', ['who', sip, String(port)]);
      // The app sees its real peer, not 127.0.0.1:15001 (getpeername4 hook).
      expect(r.getpeername).toBe(`${sip}:${port}`);
      // The server saw the connection on the address the client dialed (inbound delivery goes
      // to the pod's own IP, never its loopback), from the client's own IP.
      expect(String(r.reply).split(' ')[0]).toBe(`${sip}:${port}`);
      expect(String(r.reply).split(' ')[1]!.split(':')[0]).toBe(mesh.ip('mesh/client'));
    }
    const flows = await mesh.flows();
    for (const port of PORTS) {
      const out = flows.find((f) => f.direction === 'outbound' && f.originalDst === `${sip}:${port}`);
      expect(out, `outbound flow to port ${port}`).toBeDefined();
      expect(out!.pod).toBe('mesh/client');
      expect(out!.src.ip).toBe(mesh.ip('mesh/client'));
      expect(out!.dst.workload).toBe('server');
      const inb = flows.find((f) => f.direction === 'inbound' && f.originalDst === `${sip}:${port}`);
      expect(inb, `inbound flow to port ${port}`).toBeDefined();
      expect(inb!.pod).toBe('mesh/server');
      // Upstream sockets are made in the client's netns, so the source is the client's IP.
      expect(inb!.src.ip).toBe(mesh.ip('mesh/client'));
      expect(inb!.src.workload).toBe('client');
    }
  });

  it('captures a v4-mapped IPv6 socket (connect6)', async () => {
    const sip = mesh.ip('mesh/server');
    const r = mesh.client('mesh/client', ['who', sip, '9090', '--v6']);
    expect(r.getpeername).toBe(`::ffff:${sip}:9090`);
    const flows = await mesh.flows();
    expect(flows.some((f) => f.direction === 'outbound' && f.originalDst === `${sip}:9090` && f.src.port !== 0)).toBe(true);
  });

  it("captures a connection to the client's own pod IP without looping", async () => {
    const cip = mesh.ip('mesh/client');
    const r = mesh.client('mesh/client', ['who', cip, '7070']);
    expect(r.getpeername).toBe(`${cip}:7070`);
    // The same-node hand-off delivers it to the app at the pod's IP, once.
    expect(String(r.reply).split(' ')[0]).toBe(`${cip}:7070`);
    const flows = (await mesh.flows()).filter((f) => f.originalDst === `${cip}:7070`);
    expect(flows.map((f) => `${f.direction} ${f.pod}`).sort()).toEqual(['inbound mesh/client', 'outbound mesh/client']);
  });

  it('does not capture a pod that is not enrolled, nor loopback', async () => {
    const before = (await mesh.flows()).length;
    const sip = mesh.ip('mesh/server');
    // From the outsider to the server: not captured outbound; inbound to an enrolled pod is.
    const r = mesh.client('plain/outsider', ['who', sip, '8080']);
    expect(String(r.reply).split(' ')[0]).toBe(`${sip}:8080`);
    const flows = (await mesh.flows()).slice(before);
    expect(flows.filter((f) => f.direction === 'outbound')).toEqual([]);
    expect(flows.some((f) => f.direction === 'inbound' && f.src.ip === mesh.ip('plain/outsider'))).toBe(true);
    // Loopback inside an enrolled pod stays direct: the server sees the client's 127.0.0.1 source port.
    const before2 = (await mesh.flows()).length;
    const lo = mesh.client('mesh/client', ['who', '127.0.0.1', '7070']);
    expect(lo.getpeername).toBe('127.0.0.1:7070');
    expect(String(lo.reply).split(' ')[1]).toBe(lo.local);
    expect((await mesh.flows()).slice(before2)).toEqual([]);
  });

  it('passes 100 MB each way byte-exact with half-close both ways', async () => {
    const n = 100 * 1024 * 1024;
    const r = mesh.client('mesh/client', ['bulk', mesh.ip('mesh/server'), '8080', String(n)], 120_000);
    expect(r.server_count).toBe(n);
    expect(r.server_sha).toBe(r.expect_up_sha);
    expect(r.client_count).toBe(n);
    expect(r.client_sha).toBe(r.expect_down_sha);
    const flows = await mesh.flows();
    const f = flows.filter((x) => x.direction === 'outbound' && x.originalDst === `${mesh.ip('mesh/server')}:8080`).at(-1)!;
    // Same node: spliced in the kernel, so the counts are the kernel's, and exact.
    expect(f.spliced).toBe(true);
    expect(f.bytesSent).toBe(n + `BULK ${n}\n`.length);
    expect(f.bytesReceived).toBeGreaterThanOrEqual(n);
  });

  it('resets the app within seconds when the original destination does not answer', async () => {
    // An address in the pod subnet that no pod holds: ARP fails, the proxy gives up, the app gets RST.
    const sip = mesh.ip('mesh/server').split('.');
    const nobody = `${sip[0]}.${sip[1]}.${sip[2]}.250`;
    const r = mesh.client('mesh/client', ['hang', nobody, '8080'], 40_000);
    expect(r.outcome).toBe('reset');
    expect(Number(r.seconds)).toBeLessThan(10);
  });

  it('fails closed while no agent runs, and keeps working after a new agent adopts the pods', async () => {
    const sip = mesh.ip('mesh/server');
    await mesh.stopAgent();
    // Inbound to an enrolled pod from a pod outside the mesh: the SYN is dropped, never delivered around the proxy.
    const r = mesh.client('plain/outsider', ['hang', sip, '8080'], 40_000);
    // sk_lookup's SK_DROP makes the kernel answer the SYN with a reset: refused, never the app.
    expect(r.outcome).toBe('error:111:Connection refused');
    await mesh.startAgent();
    const dump = await mesh.dump();
    expect(dump.pods.map((p) => p.name).sort()).toEqual(['client', 'server']);
    const after = mesh.client('mesh/client', ['who', sip, '8080']);
    expect(after.getpeername).toBe(`${sip}:8080`);
    expect(String(after.reply).split(' ')[0]).toBe(`${sip}:8080`);
  });
});
