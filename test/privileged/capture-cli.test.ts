// `nodemesh capture` as a real process against a real agent (control-plane mode, a DENY policy):
// records of real connections from pods arrive in order with pods, SPIFFE identities and
// verdicts; --pcap holds exactly the bytes the clients sent and received, stream by stream, as
// real tshark follows them; plaintext needs the agent's admin token.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { describePrivileged } from '../helpers/privileged.js';
import { BACKEND, BATCH, DENY_FRONTEND, FRONTEND, FRONTEND_SERVICE_ACCOUNT, LEGACY_CLIENT, LEGACY_NAMESPACE, SHOP_NAMESPACE, serverPod, yamlDocs } from '../helpers/shop.js';
import { cli, leftovers, meshUp, writeConfig, type Mesh } from '../helpers/mesh.js';
import { follow, hasTshark } from '../helpers/tshark.js';
import type { CaptureRecord } from '../../src/capture/record.js';


const EXCLUDED_PORT_POD = `apiVersion: v1
kind: Pod
metadata:
  name: excl
  namespace: shop
  annotations: { traffic.sidecar.istio.io/excludeOutboundPorts: "8080" }
spec:
  containers:
  - { name: c, command: [sleep, infinity] }
`;

const config = yamlDocs(SHOP_NAMESPACE, FRONTEND_SERVICE_ACCOUNT, BACKEND, FRONTEND, BATCH, EXCLUDED_PORT_POD, LEGACY_NAMESPACE, LEGACY_CLIENT, serverPod('legacy', 'server', '8080'), DENY_FRONTEND);

interface Capture {
  child: ChildProcess;
  stdout: () => string;
  stderr: () => string;
  exit: Promise<number | null>;
}

/** Starts `nodemesh capture …` and resolves once its stream is established (the hello). */
async function capture(args: string[], env: NodeJS.ProcessEnv = process.env): Promise<Capture> {
  const child = spawn(cli, ['capture', ...args], { stdio: ['ignore', 'pipe', 'pipe'], env });
  let out = '';
  let err = '';
  child.stdout!.on('data', (d: Buffer) => (out += d));
  child.stderr!.on('data', (d: Buffer) => (err += d));
  const exit = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
  const t0 = Date.now();
  while (!err.includes('capturing on node')) {
    if (child.exitCode !== null || Date.now() - t0 > 10_000) throw new Error(`capture did not start: ${err}${out}`);
    await new Promise((r) => setTimeout(r, 20));
  }
  return { child, stdout: () => out, stderr: () => err, exit };
}

/** Its exit code, or a failure showing what it printed when it does not exit within `ms`. */
async function exited(c: Capture, ms = 10_000): Promise<number | null> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<'late'>((r) => (timer = setTimeout(() => r('late'), ms)));
  const got = await Promise.race([c.exit, late]);
  clearTimeout(timer);
  if (got === 'late') {
    c.child.kill('SIGKILL');
    throw new Error(`capture did not exit within ${ms} ms; stdout:\n${c.stdout()}\nstderr:\n${c.stderr()}`);
  }
  return got;
}

const sha = (b: Buffer | string) => createHash('sha256').update(b).digest('hex');

describePrivileged('nodemesh capture against a real agent', () => {
  let mesh: Mesh;
  let dir: string;
  let tmp: string;
  const started: ChildProcess[] = [];

  beforeAll(async () => {
    dir = writeConfig(config);
    tmp = mkdtempSync(join(tmpdir(), 'nm-capture-'));
    mesh = await meshUp(dir, { controlPlane: true });
    // The policy is part of the config: wait until the agent holds it.
    const t0 = Date.now();
    while (!((await mesh.dump()) as unknown as { policies?: { name: string }[] }).policies?.some((p) => p.name === 'deny-frontend')) {
      if (Date.now() - t0 > 10_000) throw new Error('the agent never got the deny-frontend policy');
      await new Promise((r) => setTimeout(r, 50));
    }
  });

  afterAll(async () => {
    for (const c of started) if (c.exitCode === null) c.kill('SIGKILL');
    await mesh?.down();
    rmSync(dir, { recursive: true, force: true });
    rmSync(tmp, { recursive: true, force: true });
    expect(leftovers(...(mesh ? [mesh.pinRoot] : []))).toEqual([]);
  });

  it('streams an allowed and a denied connection in order, with pods, identities, verdict and policy', async () => {
    const c = await capture(['--json', '--count', '2', '--namespace', 'shop', '--port', '8080', '--state-dir', mesh.sd]);
    started.push(c.child);
    const ok = mesh.client('shop/batch', ['who', mesh.ip('shop/backend'), '8080']);
    expect(ok.reply).toBeTruthy();
    const denied = mesh.client('shop/frontend', ['who', mesh.ip('shop/backend'), '8080']);
    expect(denied.reply).toBeUndefined();
    expect(await exited(c)).toBe(0);
    const recs = c.stdout().trim().split('\n').map((l) => JSON.parse(l) as CaptureRecord);
    expect(recs).toHaveLength(2);
    expect(recs[0]).toMatchObject({
      v: 1,
      direction: 'local',
      verdict: 'allowed',
      src: { pod: 'shop/batch', ip: mesh.ip('shop/batch'), identity: 'spiffe://cluster.local/ns/shop/sa/default' },
      dst: { pod: 'shop/backend', ip: mesh.ip('shop/backend'), port: 8080, identity: 'spiffe://cluster.local/ns/shop/sa/backend' },
      bytes: { sent: 4, from: 'proxy' },
    });
    expect(recs[0]!.bytes!.received).toBeGreaterThan(0);
    expect(recs[1]).toMatchObject({
      verdict: 'denied',
      policy: 'shop/deny-frontend',
      responseFlags: 'DENY',
      src: { pod: 'shop/frontend', identity: 'spiffe://cluster.local/ns/shop/sa/frontend' },
      dst: { pod: 'shop/backend', port: 8080 },
      bytes: { sent: 0, received: 0 },
    });
    expect(Date.parse(recs[1]!.time)).toBeGreaterThanOrEqual(Date.parse(recs[0]!.time));
    // The verdict filter selects only the denied one from the replay.
    const d = spawnSync(cli, ['capture', '--json', '--since', '5m', '--verdict', 'denied', '--count', '1', '--state-dir', mesh.sd], { encoding: 'utf8', timeout: 10_000 });
    expect(d.status).toBe(0);
    expect(JSON.parse(d.stdout.trim())).toMatchObject({ id: recs[1]!.id, verdict: 'denied' });
  });

  it('writes a pcap holding exactly the bytes each client sent and received, stream by stream', async () => {
    expect(hasTshark, 'tshark is installed (make apt-deps)').toBe(true);
    const file = join(tmp, 'bulk.pcap');
    const c = await capture(['--pcap', file, '--to', 'shop/backend', '--port', '9090', '--state-dir', mesh.sd]);
    started.push(c.child);
    const sizes = [300_000, 123_457];
    const results = await Promise.all(sizes.map((n) => mesh.clientAsync('shop/batch', ['bulk', mesh.ip('shop/backend'), '9090', String(n)])));
    for (const r of results) expect(r.client_sha).toBe(r.expect_down_sha);
    // Records are published at close: wait for both table rows, then Ctrl-C.
    const t0 = Date.now();
    while ((c.stdout().match(/allowed/g) ?? []).length < 2 && Date.now() - t0 < 10_000) await new Promise((r) => setTimeout(r, 50));
    c.child.kill('SIGINT');
    expect(await exited(c)).toBe(0);
    expect(c.stdout()).toMatch(/^TIME\s+VERDICT\s+SOURCE/m);
    const streams = [follow(file, 0), follow(file, 1)];
    for (const [i, n] of sizes.entries()) {
      const s = streams.find((x) => x.c2s.length === `BULK ${n}\n`.length + n);
      expect(s, `a stream of ${n} bytes up`).toBeDefined();
      expect(s!.nodes[1]).toBe(`${mesh.ip('shop/backend')}:9090`);
      expect(s!.nodes[0]!.startsWith(`${mesh.ip('shop/batch')}:`)).toBe(true);
      const head = `BULK ${n}\n`;
      expect(s!.c2s.subarray(0, head.length).toString()).toBe(head);
      expect(sha(s!.c2s.subarray(head.length))).toBe(results[i]!.expect_up_sha);
      const nl = s!.s2c.indexOf(0x0a);
      expect(s!.s2c.subarray(0, nl).toString()).toBe(`${results[i]!.server_count} ${results[i]!.server_sha}`);
      expect(s!.s2c.length - nl - 1).toBe(n);
      expect(sha(s!.s2c.subarray(nl + 1))).toBe(results[i]!.client_sha);
    }
  });

  it('serves plaintext only with the admin token: refused without it, to a non-root CLI, and served with it', async () => {
    const tokenFile = join(mesh.sd, 'agent', 'admin-token');
    expect(statSync(tokenFile).mode & 0o777).toBe(0o600);
    const token = readFileSync(tokenFile, 'utf8').trim();
    const no = await fetch('http://127.0.0.1:15000/debug/capture?pcap=1');
    expect(no.status).toBe(401);
    const ac = new AbortController();
    const yes = await fetch('http://127.0.0.1:15000/debug/capture?pcap=1', { headers: { authorization: `Bearer ${token}` }, signal: ac.signal });
    expect(yes.status).toBe(200);
    const first = await yes.body!.getReader().read();
    expect(JSON.parse(Buffer.from(first.value!).toString().split('\n')[0]!)).toMatchObject({ type: 'hello', pcap: true });
    ac.abort();
    // The CLI run by an unprivileged user cannot read the token and says so, writing no file;
    // the same command as root (above) works.
    const file = join(tmpdir(), `nm-capture-nobody-${process.pid}.pcap`);
    const r = spawnSync('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', '--', cli, 'capture', '--pcap', file, '--count', '1', '--state-dir', mesh.sd], { encoding: 'utf8', timeout: 10_000 });
    expect(r.status).toBe(2);
    expect(r.stderr).toContain('admin token');
    expect(() => statSync(file)).toThrow();
  });

  it('shows what only the kernel saw: an observed pod outside the mesh, and an excluded port passed with its reason', async () => {
    const c = await capture(['--json', '--state-dir', mesh.sd]);
    started.push(c.child);
    const recs = () => c.stdout().trim().split('\n').filter(Boolean).map((l) => JSON.parse(l) as CaptureRecord);
    const waitRec = async (what: string, pred: (r: CaptureRecord) => boolean): Promise<CaptureRecord> => {
      const t0 = Date.now();
      for (;;) {
        const r = recs().find(pred);
        if (r) return r;
        if (Date.now() - t0 > 10_000) throw new Error(`no record of ${what}; got:\n${c.stdout()}\n${c.stderr()}`);
        await new Promise((res) => setTimeout(res, 50));
      }
    };
    const server = mesh.ip('legacy/server');
    // A pod outside the mesh, to another one: never redirected, only observed.
    expect(mesh.client('legacy/client', ['who', server, '8080']).reply).toBeTruthy();
    const observed = await waitRec('the observed connection', (r) => r.verdict === 'observed' && r.dst.ip === server && r.src.ip === mesh.ip('legacy/client'));
    expect(observed).toMatchObject({ source: 'kernel', dst: { port: 8080 }, bytes: { sent: 4, from: 'kernel' } });
    // An enrolled pod's excluded port: the connect passes around the proxy, with the reason.
    expect(mesh.client('shop/excl', ['who', server, '8080']).reply).toBeTruthy();
    const passed = await waitRec('the excluded port', (r) => r.verdict === 'passed' && r.src.ip === mesh.ip('shop/excl'));
    expect(passed).toMatchObject({ reason: 'excluded_port', source: 'kernel', src: { pod: 'shop/excl' }, dst: { ip: server, port: 8080 } });
    // Its positive twin: the same pod to a mesh port goes through the proxy (a proxied record).
    expect(mesh.client('shop/excl', ['who', mesh.ip('shop/backend'), '9090']).reply).toBeTruthy();
    await waitRec('the proxied connection of the same pod', (r) => r.verdict === 'allowed' && r.src.ip === mesh.ip('shop/excl') && r.dst.port === 9090);
    c.child.kill('SIGINT');
    expect(await exited(c)).toBe(0);
  });

  it('is off with --capture off: the CLI is refused with the reason, no observer stays attached, and the mesh still works', async () => {
    const observers = () => (existsSync(join(mesh.pinRoot, 'observe')) ? readdirSync(join(mesh.pinRoot, 'observe')) : []);
    // Its twin: with capture on (the tests above), the observer is attached.
    expect(observers()).toHaveLength(1);
    await mesh.stopAgent();
    await mesh.startAgent(['--capture', 'off']);
    try {
      const r = spawnSync(cli, ['capture', '--json', '--count', '1', '--state-dir', mesh.sd], { encoding: 'utf8', timeout: 10_000 });
      expect(r.status).not.toBe(0);
      expect(r.stderr).toContain('capture is off on this agent');
      expect(observers()).toEqual([]);
      // The data path is unchanged: allowed still passes, denied still refused.
      expect(mesh.client('shop/batch', ['who', mesh.ip('shop/backend'), '8080']).reply).toBeTruthy();
      expect(mesh.client('shop/frontend', ['who', mesh.ip('shop/backend'), '8080']).reply).toBeUndefined();
    } finally {
      await mesh.stopAgent();
      await mesh.startAgent();
    }
    expect(observers()).toHaveLength(1);
  });
});
