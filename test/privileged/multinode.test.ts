// The L4 mesh across two simulated nodes, end to end: the control plane on the cluster
// network, one agent per node (all as processes, started the way `nodemesh up` starts them),
// real clients in pods. Cross-node traffic rides HBONE (mTLS HTTP/2 CONNECT on 15008);
// same-node traffic takes the in-process fast path; both must decide alike.
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { captureClusterTcp, nodeAgentPid, startNodeAgent, stopNodeAgent } from '../../src/cluster/nodes.js';
import { controlPlaneDir } from '../../src/cluster/daemon.js';
import { simUp } from '../../src/sim/index.js';
import { clusterUp, controlPlaneLog, type Cluster } from '../helpers/cluster.js';
import { fixtureBin, leftovers, repoRoot, writeConfig } from '../helpers/mesh.js';
import { describePrivileged } from '../helpers/privileged.js';

const server = join(fixtureBin, 'nm_server.py');
const probe = join(fixtureBin, 'nm_tls_probe.py');
const VIP = '10.96.1.10';

const web = (name: string, node: string) => `---
apiVersion: v1
kind: Pod
metadata: { name: ${name}, namespace: mesh, labels: { app: web } }
spec:
  nodeName: ${node}
  serviceAccountName: web
  containers:
  - { name: s, command: [python3, ${server}, "8080,9090"], ports: [{ containerPort: 8080 }, { containerPort: 9090 }] }
`;
const sleeper = (ns: string, name: string, sa: string, node: string) => `---
apiVersion: v1
kind: Pod
metadata: { name: ${name}, namespace: ${ns} }
spec:
  nodeName: ${node}
  serviceAccountName: ${sa}
  containers:
  - { name: c, command: [sleep, infinity] }
`;

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
kind: Service
metadata: { name: web, namespace: mesh }
spec:
  clusterIP: ${VIP}
  selector: { app: web }
  ports: [{ name: tcp, port: 80, targetPort: 8080 }]
${web('web-a', 'node-a')}${web('web-b', 'node-b')}---
apiVersion: v1
kind: Pod
metadata: { name: tools, namespace: mesh }
spec:
  nodeName: node-b
  containers:
  - { name: redis, command: [redis-server, --port, "6379", --save, "", --appendonly, "no", --protected-mode, "no"], ports: [{ containerPort: 6379 }] }
  - { name: iperf3, command: [iperf3, -s, -p, "5201"], ports: [{ containerPort: 5201 }] }
${sleeper('mesh', 'client', 'client', 'node-a')}${sleeper('mesh', 'other', 'other', 'node-a')}${sleeper('plain', 'stranger', 'default', 'node-a')}---
apiVersion: v1
kind: Pod
metadata: { name: outside, namespace: plain }
spec:
  nodeName: node-b
  containers:
  - { name: s, command: [python3, ${server}, "8080"], ports: [{ containerPort: 8080 }] }
`;

/** A denied connection: the proxy resets it (ENOTCONN when the reset beats the first send). */
function refused(r: Record<string, unknown>): boolean {
  return r.outcome === 'reset' || r.outcome === 'error:107:Transport endpoint is not connected';
}

const policy = (name: string, action: 'ALLOW' | 'DENY', rule: string) => `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: ${name}, namespace: mesh }
spec:
  selector: { matchLabels: { app: web } }
  action: ${action}
  rules:
  - ${rule}
`;

describePrivileged('the L4 mesh on two nodes', () => {
  let c: Cluster;
  let dir: string;
  let pinRoots: string[] = [];

  const who = (from: string, ip: string, port = 8080) => c.client(from, ['who', ip, String(port)]);
  const waitOpen = async (node: string, srcIp: string, port: number) => {
    const t0 = Date.now();
    while (Date.now() - t0 < 10_000) {
      if ((await c.flows(node)).some((f) => f.open && f.direction === 'inbound' && f.src.ip === srcIp && f.dst.port === port)) return;
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error(`no open connection from ${srcIp} to port ${port} on ${node}`);
  };

  beforeAll(async () => {
    dir = writeConfig(config);
    c = await clusterUp(dir);
    pinRoots = c.pinRoots;
  });

  afterAll(async () => {
    await c?.down();
    rmSync(dir, { recursive: true, force: true });
    expect(leftovers(...pinRoots)).toEqual([]);
  });

  it('enrolls the mesh pods on both nodes, each agent with its own pods and certificates', async () => {
    const a = (await c.dump('node-a')) as { node: string; pods: { name: string }[]; certificates: { identity: string; state: string }[] };
    const b = (await c.dump('node-b')) as typeof a;
    expect(a.node).toBe('node-a');
    expect(a.pods.map((p) => p.name).sort()).toEqual(['client', 'other', 'web-a']);
    expect(b.pods.map((p) => p.name).sort()).toEqual(['tools', 'web-b']);
    expect(b.certificates.map((x) => x.identity).sort()).toEqual(['spiffe://cluster.local/ns/mesh/sa/default', 'spiffe://cluster.local/ns/mesh/sa/web']);
    // The nodes as `sim nodes --json` lists them, for `ip netns exec <netns> …`.
    const r = spawnSync(join(repoRoot, 'bin', 'nodemesh'), ['sim', 'nodes', '--json', '--state-dir', c.sd], { encoding: 'utf8' });
    expect(r.status).toBe(0);
    const nodes = (JSON.parse(r.stdout) as { name: string; ip: string; netns: string }[]).map(({ name, ip, netns }) => ({ name, ip, netns }));
    expect(nodes).toEqual([
      { name: 'node-a', ip: '10.240.0.1', netns: 'nm-node.node-a' },
      { name: 'node-b', ip: '10.240.0.2', netns: 'nm-node.node-b' },
    ]);
    // `sim agent` names the nodes it knows when asked for one it does not.
    const bad = spawnSync(join(repoRoot, 'bin', 'nodemesh'), ['sim', 'agent', '--state-dir', c.sd, 'node-z', '--', '--help'], { encoding: 'utf8' });
    expect(bad.status).not.toBe(0);
    expect(bad.stderr).toContain('NM_ERR_SIM_NODE');
    expect(bad.stderr).toMatch(/node-a, node-b/);
  });

  it('carries real clients across nodes: redis-cli, iperf3, and 32 MB each way byte-exact with half-close', async () => {
    const tools = c.ip('mesh/tools');
    expect(c.exec('mesh/client', ['redis-cli', '-h', tools, 'SET', 'k', 'across']).stdout.trim()).toBe('OK');
    expect(c.exec('mesh/client', ['redis-cli', '-h', tools, 'GET', 'k']).stdout.trim()).toBe('across');
    const ip3 = JSON.parse(c.exec('mesh/client', ['iperf3', '-c', tools, '-p', '5201', '-n', '256M', '-J']).stdout) as { end: { sum_sent: { bytes: number }; sum_received: { bytes: number } } };
    // iperf3 -n stops once the client has written 256 MiB and reads the server's count at that
    // moment, so bytes still buffered in the two proxies are not in it: up to the HBONE stream
    // window (4 MiB) plus every hop's socket buffers, which once came to more than 10% of the
    // 64 MiB this sent before. The bulk transfer below is the byte-exact check.
    expect(ip3.end.sum_sent.bytes).toBeGreaterThanOrEqual(256 << 20);
    expect(ip3.end.sum_received.bytes).toBeGreaterThan(0.9 * ip3.end.sum_sent.bytes);
    const bulk = c.client('mesh/client', ['bulk', c.ip('mesh/web-b'), '9090', String(32 << 20)]);
    expect(bulk).toMatchObject({ server_count: 32 << 20, client_count: 32 << 20 });
    expect(bulk.server_sha).toBe(bulk.expect_up_sha);
    expect(bulk.client_sha).toBe(bulk.expect_down_sha);
    const rec = (await c.flows('node-b')).filter((f) => f.direction === 'inbound' && f.dst.port === 9090).at(-1)!;
    expect(rec).toMatchObject({ bytesSent: (32 << 20) + 'BULK 33554432\n'.length, responseFlags: '-' });
    expect(rec.error).toBeUndefined();
  });

  it('streams every node\'s records with nodemesh capture --all-nodes: both ends of a cross-node connection', async () => {
    const child = spawn(join(repoRoot, 'bin', 'nodemesh'), ['capture', '--all-nodes', '--json', '--count', '2', '--port', '9090', '--state-dir', c.sd], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d));
    child.stderr.on('data', (d: Buffer) => (err += d));
    const exit = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
    try {
      const t0 = Date.now();
      while ((err.match(/capturing on node/g) ?? []).length < 2) {
        if (child.exitCode !== null || Date.now() - t0 > 15_000) throw new Error(`capture --all-nodes did not start on both nodes: ${err}`);
        await new Promise((r) => setTimeout(r, 50));
      }
      expect(c.client('mesh/client', ['who', c.ip('mesh/web-b'), '9090']).reply).toBeTruthy();
      const code = await Promise.race([exit, new Promise<'late'>((r) => setTimeout(() => r('late'), 15_000))]);
      expect(code, `capture did not end: ${out}${err}`).toBe(0);
    } finally {
      if (child.exitCode === null) child.kill('SIGKILL');
    }
    const recs = out.trim().split('\n').map((l) => JSON.parse(l) as { node: string; direction: string; verdict: string; src: { pod?: string }; dst: { ip: string; port: number; pod?: string } });
    expect(recs.map((r) => [r.node, r.direction]).sort()).toEqual([['node-a', 'outbound'], ['node-b', 'inbound']]);
    for (const r of recs) expect(r).toMatchObject({ verdict: 'allowed', src: { pod: 'mesh/client' }, dst: { ip: c.ip('mesh/web-b'), port: 9090, pod: 'mesh/web-b' } });
  });

  it('carries cross-node traffic over HBONE, encrypted on the cluster link', async () => {
    const marker = 'nodemesh-plaintext-marker';
    const toHbone = new RegExp(`> ${c.ip('mesh/web-b').replace(/\./g, '\\.')}\\.15008:`);
    let sent = { stdout: '' };
    const { text, log } = await captureClusterTcp(
      () => {
        sent = c.exec('mesh/client', ['python3', '-c', `import socket;s=socket.create_connection(('${c.ip('mesh/web-b')}',9090));s.sendall(b'ECHO\\n'+b'${marker}'*4);s.shutdown(1);import sys;sys.stdout.write(s.makefile('rb').read().decode())`]);
      },
      { until: (t) => toHbone.test(t), waitMs: 2000 },
    );
    expect(log).toContain('listening');
    expect(sent.stdout).toBe(marker.repeat(4)); // the echo came back through the tunnel
    expect(text, `tcpdump said: ${log}`).toMatch(toHbone);
    expect(text).not.toMatch(/\.9090:/); // the app port never appears on the wire
    expect(text).not.toContain(marker);
    const rec = (await c.flows('node-b')).filter((f) => f.direction === 'inbound' && f.dst.port === 9090).at(-1)!;
    expect(rec.src.principal).toBe('cluster.local/ns/mesh/sa/client');
    expect(rec.hbone).toMatchObject({ forwardedFor: c.ip('mesh/client') });
    expect(rec.hbone?.traceparent).toMatch(/^00-[0-9a-f]{32}-[0-9a-f]{16}-0[01]$/);
    const out = (await c.flows('node-a')).filter((f) => f.direction === 'outbound' && f.dst.port === 9090).at(-1)!;
    expect(out.hbone?.traceparent).toBe(rec.hbone?.traceparent);
  });

  it('spreads a Service VIP over its endpoints on both nodes', async () => {
    const before = (await c.flows('node-a')).length;
    for (let i = 0; i < 8; i++) expect(who('mesh/client', VIP, 80).reply).toBeTruthy();
    // The app sees the proxy on loopback, so the source node's records say who served.
    const served = (await c.flows('node-a')).slice(before).filter((f) => f.originalDst === `${VIP}:80`);
    expect(served).toHaveLength(8);
    const by = new Map<string, number>();
    for (const f of served) by.set(f.dst.workload ?? '?', (by.get(f.dst.workload ?? '?') ?? 0) + 1);
    // Round robin over the two endpoints: each serves half.
    expect(Object.fromEntries(by)).toEqual({ 'web-a': 4, 'web-b': 4 });
    expect(served.find((f) => f.dst.workload === 'web-b')!.hbone?.peer).toBe(`${c.ip('mesh/web-b')}:15008`);
  });

  it('passes destinations outside the mesh through as plain TCP from the pod IP', async () => {
    const r = who('mesh/client', c.ip('plain/outside'));
    // The server saw the client's own pod IP, not a node or proxy address.
    expect(String(r.reply).split(' ')[1]!.split(':')[0]).toBe(c.ip('mesh/client'));
    const rec = (await c.flows('node-a')).filter((f) => f.direction === 'outbound' && f.dst.ip === c.ip('plain/outside')).at(-1)!;
    expect(rec.hbone).toBeUndefined();
    expect(rec.upstream).toBe(`${c.ip('plain/outside')}:8080`);
  });

  it('decides every case of a policy table the same on the same-node path and over HBONE', async () => {
    const cases: { name: string; yaml?: string; port: number; expect: Record<'client' | 'other', boolean> }[] = [
      { name: 'no policy', port: 8080, expect: { client: true, other: true } },
      { name: 'DENY by principal', yaml: policy('t', 'DENY', 'from: [{ source: { principals: ["cluster.local/ns/mesh/sa/client"] } }]'), port: 8080, expect: { client: false, other: true } },
      { name: 'DENY by namespace', yaml: policy('t', 'DENY', 'from: [{ source: { namespaces: ["mesh"] } }]'), port: 8080, expect: { client: false, other: false } },
      { name: 'DENY by port (denied port)', yaml: policy('t', 'DENY', 'to: [{ operation: { ports: ["9090"] } }]'), port: 9090, expect: { client: false, other: false } },
      { name: 'DENY by port (other port)', yaml: policy('t', 'DENY', 'to: [{ operation: { ports: ["9090"] } }]'), port: 8080, expect: { client: true, other: true } },
      { name: 'ALLOW-only refuses everyone else', yaml: policy('t', 'ALLOW', 'from: [{ source: { principals: ["cluster.local/ns/mesh/sa/other"] } }]'), port: 8080, expect: { client: false, other: true } },
      { name: 'DENY with notPrincipals', yaml: policy('t', 'DENY', 'from: [{ source: { notPrincipals: ["cluster.local/ns/mesh/sa/other"] } }]'), port: 8080, expect: { client: false, other: true } },
    ];
    // Each case's policy gets a new name, so waiting for it (and for the last one to go) shows
    // that every node applies exactly this case.
    let current: string | undefined;
    for (const [i, k] of cases.entries()) {
      const next = k.yaml ? `t${i}` : undefined;
      if (k.yaml) c.write('t.yaml', k.yaml.replace('metadata: { name: t,', `metadata: { name: ${next},`));
      else rmSync(join(dir, 't.yaml'), { force: true });
      if (next) await c.waitPolicy(`mesh/${next}`, true);
      if (current) await c.waitPolicy(`mesh/${current}`, false);
      current = next;
      for (const from of ['client', 'other'] as const) {
        const same = who(`mesh/${from}`, c.ip('mesh/web-a'), k.port);
        const cross = who(`mesh/${from}`, c.ip('mesh/web-b'), k.port);
        const got = { same: same.reply ? true : refused(same) ? false : same.outcome, cross: cross.reply ? true : refused(cross) ? false : cross.outcome };
        expect({ case: k.name, from, ...got }).toEqual({ case: k.name, from, same: k.expect[from], cross: k.expect[from] });
      }
    }
    // The cross-node denial was counted at the destination with the policy's name.
    const b = await c.metrics('node-b');
    expect(b).toMatch(/istio_tcp_connections_opened_total\{[^}]*reporter="destination"[^}]*source_principal="spiffe:\/\/cluster\.local\/ns\/mesh\/sa\/client"[^}]*response_flags="DENY"[^}]*\} [1-9]/);
    const denied = (await c.flows('node-b')).filter((f) => f.responseFlags === 'DENY').at(-1)!;
    expect(denied.policy).toEqual({ allowed: false, name: `mesh/${current}` });
    rmSync(join(dir, 't.yaml'), { force: true });
    if (current) await c.waitPolicy(`mesh/${current}`, false);
  });

  it('refuses a process that opens its own TLS to a pod\'s 15008 without a mesh certificate', async () => {
    const target = c.ip('mesh/web-b');
    const certs = mkdtempSync(join(tmpdir(), 'nm-spoof-'));
    try {
      const cp = controlPlaneDir(c.sd);
      // The mesh root signs for trust domain cluster.local only; these are what an attacker could make.
      const foreignCa = makeCa(certs, 'foreign');
      const cases = {
        'no certificate': [] as string[],
        'a certificate from another CA': makeLeaf(certs, 'other-ca', foreignCa, 'spiffe://cluster.local/ns/mesh/sa/client'),
        'the mesh root, another trust domain': makeLeaf(certs, 'other-td', { cert: join(cp, 'root-cert.pem'), key: join(cp, 'root-key.pem') }, 'spiffe://evil.local/ns/mesh/sa/client'),
        // The control: the same probe with a certificate the mesh accepts reaches HTTP/2.
        control: makeLeaf(certs, 'good', { cert: join(cp, 'root-cert.pem'), key: join(cp, 'root-key.pem') }, 'spiffe://cluster.local/ns/plain/sa/default'),
      };
      const before = (await c.flows('node-b')).filter((f) => f.src.ip === c.ip('plain/stranger')).length;
      const outcomes: Record<string, unknown> = {};
      for (const [name, files] of Object.entries(cases)) {
        const r = c.exec('plain/stranger', ['python3', probe, target, '15008', ...files]);
        outcomes[name] = (JSON.parse(r.stdout.trim().split('\n').at(-1)!) as { outcome: string }).outcome;
      }
      expect(outcomes.control).toBe('h2');
      for (const name of ['no certificate', 'a certificate from another CA', 'the mesh root, another trust domain']) {
        expect({ name, outcome: outcomes[name] }).not.toEqual({ name, outcome: 'h2' });
        expect(['tls-refused', 'closed', 'reset']).toContain(outcomes[name]);
      }
      // None of them reached the app: no connection from the stranger was relayed.
      expect((await c.flows('node-b')).filter((f) => f.src.ip === c.ip('plain/stranger')).length).toBe(before);
    } finally {
      rmSync(certs, { recursive: true, force: true });
    }
  });

  it('accepts plaintext from outside the mesh under PERMISSIVE and refuses it under STRICT', async () => {
    const r = who('plain/stranger', c.ip('mesh/web-b'));
    expect(r.reply).toBeTruthy();
    expect(await c.metrics('node-b')).toMatch(/istio_tcp_connections_opened_total\{[^}]*reporter="destination"[^}]*source_workload="stranger"[^}]*connection_security_policy="none"[^}]*\}/);
    c.write('strict.yaml', `apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: { name: strict, namespace: mesh }
spec: { mtls: { mode: STRICT } }
`);
    let last: Record<string, unknown> = {};
    for (let i = 0; i < 40; i++) {
      last = who('plain/stranger', c.ip('mesh/web-b'));
      if (refused(last)) break;
      await new Promise((res) => setTimeout(res, 100));
    }
    expect(refused(last)).toBe(true);
    // Mesh clients, on either path, still get through: they carry an identity.
    expect(who('mesh/client', c.ip('mesh/web-b')).reply).toBeTruthy();
    expect(who('mesh/client', c.ip('mesh/web-a')).reply).toBeTruthy();
    rmSync(join(dir, 'strict.yaml'));
    for (let i = 0; i < 40; i++) {
      last = who('plain/stranger', c.ip('mesh/web-b'));
      if (last.reply) break;
      await new Promise((res) => setTimeout(res, 100));
    }
    expect(last.reply).toBeTruthy();
  });

  it('reports both sides with Istio\'s labels and shows the HBONE pool', async () => {
    expect(who('mesh/client', c.ip('mesh/web-b')).reply).toBeTruthy();
    const a = await c.metrics('node-a');
    const b = await c.metrics('node-b');
    const labels = 'source_workload="client",source_workload_namespace="mesh",source_principal="spiffe://cluster.local/ns/mesh/sa/client",destination_workload="web-b",destination_workload_namespace="mesh",destination_principal="spiffe://cluster.local/ns/mesh/sa/web"';
    for (const [text, reporter] of [[a, 'source'], [b, 'destination']] as const) {
      const line = text.split('\n').find((l) => l.startsWith('istio_tcp_connections_opened_total{') && l.includes(`reporter="${reporter}"`) && l.includes('destination_workload="web-b"') && l.includes('source_workload="client"') && l.includes('response_flags="-"'));
      expect(line, `${reporter} reporter line`).toBeDefined();
      for (const kv of labels.split(',')) expect(line).toContain(kv);
      expect(line).toContain('connection_security_policy="mutual_tls"');
      expect(text).toMatch(/istio_tcp_sent_bytes_total\{[^}]*destination_workload="web-b"[^}]*\} [1-9]/);
    }
    const pool = ((await c.dump('node-a')) as { hbonePool: { source: string; destIdentity: string; destAddr: string; state: string }[] }).hbonePool;
    expect(pool).toContainEqual(expect.objectContaining({ destIdentity: 'spiffe://cluster.local/ns/mesh/sa/web', destAddr: `${c.ip('mesh/web-b')}:15008` }));
  });

  it('closes an open cross-node connection within a second when a new policy denies it', async () => {
    const long = c.clientAsync('mesh/client', ['echoloop', c.ip('mesh/web-b'), '9090', '8']);
    const kept = c.clientAsync('mesh/other', ['echoloop', c.ip('mesh/web-b'), '9090', '4']);
    await waitOpen('node-b', c.ip('mesh/client'), 9090);
    await waitOpen('node-b', c.ip('mesh/other'), 9090);
    const t0 = Date.now();
    c.write('deny.yaml', policy('deny-client', 'DENY', 'from: [{ source: { principals: ["cluster.local/ns/mesh/sa/client"] } }]'));
    const res = await long;
    expect(res.outcome).toBe('reset');
    expect(Date.now() - t0).toBeLessThan(2500); // debounce + push + re-evaluation, with slack for a busy machine
    expect((await kept).outcome).toBe('ok');
    const rec = (await c.flows('node-b')).filter((f) => f.error?.startsWith('closed:')).at(-1)!;
    expect(rec.policy).toEqual({ allowed: false, name: 'mesh/deny-client' });
    rmSync(join(dir, 'deny.yaml'));
    await c.waitPolicy('mesh/deny-client', false);
  });

  it('restarts an agent without its pods ever leaving the other nodes\' view, and traffic resumes', async () => {
    const b = c.node('node-b');
    const webB = c.ip('mesh/web-b');
    let watching = true;
    const seen: boolean[] = [];
    // node-a's view of web-b while node-b's agent is replaced.
    const watch = (async () => {
      while (watching) {
        const d = (await c.dump('node-a')) as { workloads: { addresses: string[] }[] };
        seen.push(d.workloads.some((w) => w.addresses.includes(webB)));
      }
    })();
    const pidBefore = nodeAgentPid(b);
    const restartedAt = Date.now();
    expect(await stopNodeAgent(b)).toBe(true);
    const pidAfter = await startNodeAgent(b, c.sd, dir);
    await new Promise((r) => setTimeout(r, 1500));
    watching = false;
    await watch;
    expect(pidAfter).not.toBe(pidBefore);
    expect(seen.length).toBeGreaterThan(5);
    expect(seen.every(Boolean)).toBe(true);
    // The new agent never told the control plane that node-b had no pods.
    const reports = controlPlaneLog(c.sd)
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as { time: number; node?: string; pods?: number; msg: string })
      .filter((r) => r.time >= restartedAt && r.node === 'node-b' && r.msg === 'pod status reported');
    expect(reports.length).toBeGreaterThan(0);
    expect(reports.map((r) => r.pods)).not.toContain(0);
    const d = (await c.dump('node-b')) as { pods: { name: string }[] };
    expect(d.pods.map((p) => p.name).sort()).toEqual(['tools', 'web-b']);
    expect(who('mesh/client', webB).reply).toBeTruthy();
  });

  it('resets the client, not a hang, when the endpoint on the other node dies mid-stream', async () => {
    const stream = c.clientAsync('mesh/client', ['stream', c.ip('mesh/web-b'), '9090', '20']);
    await waitOpen('node-b', c.ip('mesh/client'), 9090);
    await new Promise((r) => setTimeout(r, 300)); // let unread bytes pile up at the app
    const pod = (await c.pods()).find((p) => p.name === 'web-b')!;
    const t0 = Date.now();
    for (const pid of pod.pids) process.kill(pid, 'SIGKILL');
    const res = await stream;
    expect(res.outcome).toBe('reset');
    expect(Date.now() - t0).toBeLessThan(5000);
    // The pod comes back (sim up restarts dead containers) for whatever runs next.
    await simUp(dir, { stateDir: c.sd });
  });
});

function openssl(args: string[]): void {
  execFileSync('openssl', args, { stdio: ['ignore', 'ignore', 'pipe'] });
}

function makeCa(dir: string, name: string): { cert: string; key: string } {
  const cert = join(dir, `${name}-ca.pem`);
  const key = join(dir, `${name}-ca-key.pem`);
  openssl(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', key, '-out', cert, '-days', '1', '-subj', `/O=${name}`]);
  return { cert, key };
}

/** A leaf for `spiffeId` signed by `ca`; returns [chain, key] for the probe. */
function makeLeaf(dir: string, name: string, ca: { cert: string; key: string }, spiffeId: string): string[] {
  const key = join(dir, `${name}-key.pem`);
  const csr = join(dir, `${name}.csr`);
  const cert = join(dir, `${name}.pem`);
  openssl(['req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', key, '-out', csr, '-subj', '/O=probe', '-addext', `subjectAltName=critical,URI:${spiffeId}`]);
  openssl(['x509', '-req', '-in', csr, '-CA', ca.cert, '-CAkey', ca.key, '-CAcreateserial', '-days', '1', '-copy_extensions', 'copy', '-out', cert]);
  readFileSync(cert); // fail here, not in the pod, if openssl wrote nothing
  return [cert, key];
}
