// IPv6 never bypasses the mesh, end to end on one simulated node with the agent: pods get the
// kernel's link-local IPv6 on eth0 as on a real node; between two enrolled pods a link-local
// connect gets nothing (refused outbound, dropped inbound), the same listener answers over
// IPv4 through the mesh, IPv6 loopback inside a pod works, and two pods outside the mesh talk
// over link-local (so a bypass would show). docs/security.md, "IPv6".
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { describePrivileged } from '../helpers/privileged.js';
import { ipForward, leftovers, meshUp, writeConfig, type Mesh } from '../helpers/mesh.js';
import { listPods } from '../../src/sim/index.js';

const PORT = 8080;

/** A dual-stack app on [::]:port: logs each peer, answers "app <local> <peer>" and closes. */
const DUAL_SERVER = `import socket, sys
s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('::', int(sys.argv[1])))
s.listen(64)
print('listening', flush=True)
while True:
    c, peer = s.accept()
    print('accepted', peer[0], flush=True)
    try:
        c.sendall(('app %s %s\\n' % (c.getsockname()[0], peer[0])).encode())
    except OSError:
        pass
    c.close()
`;

/** argv: host port. Prints {outcome, data?}: ok, timeout, or the errno's name. */
const CLIENT = `import errno, json, socket, sys
host, port = sys.argv[1], int(sys.argv[2])
fam = socket.AF_INET6 if ':' in host else socket.AF_INET
res = {}
try:
    addr = socket.getaddrinfo(host, port, fam, socket.SOCK_STREAM)[0][4]
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.settimeout(8)
    s.connect(addr)
    data = b''
    while True:
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    res['outcome'], res['data'] = 'ok', data.decode().strip()
except socket.timeout:
    res['outcome'] = 'timeout'
except OSError as e:
    res['outcome'] = errno.errorcode.get(e.errno, str(e.errno))
print(json.dumps(res))
`;

const config = `
apiVersion: v1
kind: Namespace
metadata: { name: mesh6, labels: { nodemesh.io/dataplane-mode: ambient } }
---
apiVersion: v1
kind: Namespace
metadata: { name: plain6 }
---
apiVersion: v1
kind: Pod
metadata: { name: a, namespace: mesh6, labels: { app: a } }
spec:
  containers:
  - { name: c, command: [sleep, infinity] }
---
apiVersion: v1
kind: Pod
metadata: { name: b, namespace: mesh6, labels: { app: b } }
spec:
  containers:
  - name: s
    command: [python3, nm_dual.py, "${PORT}"]
    ports: [{ containerPort: ${PORT} }]
---
apiVersion: v1
kind: Pod
metadata: { name: c, namespace: plain6, labels: { app: c } }
spec:
  containers:
  - { name: c, command: [sleep, infinity] }
---
apiVersion: v1
kind: Pod
metadata: { name: d, namespace: plain6, labels: { app: d } }
spec:
  containers:
  - name: s
    command: [python3, nm_dual.py, "${PORT}"]
    ports: [{ containerPort: ${PORT} }]
`;

describePrivileged('IPv6 between simulated pods with the agent', () => {
  let mesh: Mesh;
  let dir: string;
  const forwardBefore = ipForward();
  const linkLocal: Record<string, string> = {};
  const logs: Record<string, string> = {};

  const connect = (from: string, host: string, port = PORT): { outcome: string; data?: string } => {
    const r = mesh.exec(from, ['python3', join(dir, 'nm_client6.py'), host, String(port)]);
    try {
      return JSON.parse(r.stdout.trim().split('\n').at(-1) ?? '') as { outcome: string; data?: string };
    } catch {
      throw new Error(`client in ${from} printed no result (exit ${r.code}): ${r.stdout}${r.stderr}`);
    }
  };
  const ll = (pod: string) => `${linkLocal[pod]}%eth0`;
  /** Peers the app of `pod` accepted so far, from its log. */
  const acceptedBy = (pod: string) =>
    readFileSync(logs[pod]!, 'utf8')
      .split('\n')
      .filter((l) => l.startsWith('accepted '))
      .map((l) => l.slice('accepted '.length).replace(/%.*$/, ''));

  /** eth0's link-local as the pod sees it, once DAD is done (bounded wait). */
  async function linkLocalOf(pod: string): Promise<string> {
    for (let i = 0; i < 100; i++) {
      const out = mesh.exec(pod, ['ip', '-6', '-o', 'addr', 'show', 'dev', 'eth0', 'scope', 'link']).stdout;
      const m = /inet6 (fe80::[0-9a-f:]+)\/64/.exec(out);
      if (m && !out.includes('tentative')) return m[1]!;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    throw new Error(`pod ${pod} has no usable link-local address on eth0`);
  }

  beforeAll(async () => {
    dir = writeConfig(config);
    writeFileSync(join(dir, 'nm_dual.py'), DUAL_SERVER);
    writeFileSync(join(dir, 'nm_client6.py'), CLIENT);
    mesh = await meshUp(dir);
    for (const p of await listPods({ stateDir: mesh.sd })) logs[`${p.namespace}/${p.name}`] = p.log;
    for (const pod of ['mesh6/a', 'mesh6/b', 'plain6/c', 'plain6/d']) linkLocal[pod] = await linkLocalOf(pod);
  });

  afterAll(async () => {
    await mesh?.down();
    expect(leftovers(...(mesh ? [mesh.pinRoot] : []))).toEqual([]);
    expect(ipForward()).toBe(forwardBefore);
  });

  it('gives every pod a link-local IPv6 on eth0 and ::1 on lo, and no IPv6 route out', async () => {
    expect((await mesh.dump()).pods.map((p) => `${p.namespace}/${p.name}`).sort()).toEqual(['mesh6/a', 'mesh6/b']);
    expect(new Set(Object.values(linkLocal)).size).toBe(4);
    for (const pod of Object.keys(linkLocal)) {
      expect(mesh.exec(pod, ['ip', '-6', '-o', 'addr', 'show', 'dev', 'lo']).stdout).toContain('inet6 ::1/128');
      const routes = mesh.exec(pod, ['ip', '-6', 'route', 'show']).stdout.trim().split('\n');
      expect(routes.filter((r) => !r.startsWith('fe80::/64 ') && !r.startsWith('multicast ')), pod).toEqual([]);
    }
  });

  it('lets two pods outside the mesh talk over link-local (what a bypass would look like)', () => {
    expect(connect('plain6/c', ll('plain6/d'))).toEqual({ outcome: 'ok', data: `app ${linkLocal['plain6/d']} ${linkLocal['plain6/c']}` });
    expect(acceptedBy('plain6/d')).toContain(linkLocal['plain6/c']);
  });

  it("gets nothing from an enrolled pod to another enrolled pod's link-local; the same listener answers over IPv4 through the mesh", async () => {
    // Outbound: connect6 on A's cgroup refuses at once.
    expect(connect('mesh6/a', ll('mesh6/b'))).toEqual({ outcome: 'EPERM' });
    // Inbound: from a pod outside the mesh nothing stops the SYN leaving, and B's sk_lookup
    // drops it (the kernel answers with a reset).
    expect(connect('plain6/c', ll('mesh6/b'))).toEqual({ outcome: 'ECONNREFUSED' });
    expect(acceptedBy('mesh6/b').filter((p) => p.startsWith('fe80:'))).toEqual([]);

    const bip = mesh.ip('mesh6/b');
    const before = (await mesh.flows()).length;
    const v4 = connect('mesh6/a', bip);
    expect(v4.outcome).toBe('ok');
    expect(v4.data).toMatch(/^app /);
    const flows = (await mesh.flows()).slice(before);
    expect(flows.some((f) => f.direction === 'outbound' && f.pod === 'mesh6/a' && f.originalDst === `${bip}:${PORT}`)).toBe(true);
    expect(flows.some((f) => f.direction === 'inbound' && f.pod === 'mesh6/b' && f.originalDst === `${bip}:${PORT}`)).toBe(true);
  });

  it('refuses native IPv6 from an enrolled pod to a pod outside the mesh too', () => {
    const before = acceptedBy('plain6/d').length;
    expect(connect('mesh6/a', ll('plain6/d'))).toEqual({ outcome: 'EPERM' });
    expect(acceptedBy('plain6/d').length).toBe(before);
    // The same destination over IPv4 is fine (it leaves through the mesh as plain TCP).
    expect(connect('mesh6/a', mesh.ip('plain6/d')).outcome).toBe('ok');
  });

  it('keeps IPv6 loopback working inside an enrolled pod', () => {
    expect(connect('mesh6/b', '::1')).toEqual({ outcome: 'ok', data: 'app ::1 ::1' });
  });
});
