// Two agents for one node, as a DaemonSet rolling update with surge runs them: a second agent
// started beside the first changes nothing (every pod stays enrolled, policy holds) and takes
// the node over; the first one, stopped, drains its open connections, and a request loop sees
// no failure throughout; an agent that cannot serve a pod it adopts leaves it enrolled (its
// connections refused, never let through), says so, and retries until it can.
import { spawn, type ChildProcess } from 'node:child_process';
import { openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { get } from 'node:http';
import { createServer, type AddressInfo, type Server } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { describePrivileged } from '../helpers/privileged.js';
import { BACKEND, BATCH, DENY_FRONTEND, FRONTEND, LEGACY_CLIENT, LEGACY_NAMESPACE, SHOP_NAMESPACE, WEB, yamlDocs } from '../helpers/shop.js';
import { cli, fixtureBin, leftovers, meshUp, writeConfig, type Mesh, processAlive } from '../helpers/mesh.js';
import { agentPid } from '../../src/cluster/up.js';
import { PORTS } from '../../src/net/index.js';
import { Redirector } from '../../src/redirect/index.js';
import { kTestHooks } from '../../src/redirect/redirector.js';
import { ipv4Key } from '../../src/redirect/layout.js';
import { POD_LINK_NAMES } from '../../src/redirect/types.js';
import { spawnInPod } from '../../src/sim/query.js';

const clientPy = join(fixtureBin, 'nm_client.py');

const config = yamlDocs(SHOP_NAMESPACE, BACKEND, WEB, FRONTEND, BATCH, LEGACY_NAMESPACE, LEGACY_CLIENT, DENY_FRONTEND);

/**
 * A bounded request loop run inside a pod: one connection and one WHO request every 100 ms
 * (at most maxN, and it stops when the stop file appears); prints {ok, fails}.
 */
const LOOP_PY = `
import json, os, socket, sys, time
ip, port, stop, maxn = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
ok, fails, t0 = 0, [], time.monotonic()
for i in range(maxn):
    if os.path.exists(stop):
        break
    t = time.monotonic()
    try:
        s = socket.create_connection((ip, port), timeout=5)
        s.settimeout(5)
        s.sendall(b"WHO\\n")
        data = b""
        while True:
            b = s.recv(4096)
            if not b:
                break
            data += b
        s.close()
        if data.strip():
            ok += 1
        else:
            fails.append({"i": i, "t": round(t - t0, 3), "error": "empty reply"})
    except OSError as e:
        fails.append({"i": i, "t": round(t - t0, 3), "error": repr(e)})
    time.sleep(max(0.0, 0.1 - (time.monotonic() - t)))
print(json.dumps({"ok": ok, "fails": fails}), flush=True)
`;

/** Holds 127.0.0.1:15001 in the pod without SO_REUSEPORT, so no agent can open its outbound listener there. */
const SQUAT_PY = `
import socket, sys, time
s = socket.socket()
s.bind(("127.0.0.1", 15001))
s.listen(8)
print("holding", flush=True)
time.sleep(600)
`;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function waitFor<T>(what: string, fn: () => Promise<T | undefined> | T | undefined, timeoutMs = 30_000, everyMs = 100): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(everyMs);
  }
}

/** One GET on a new connection (two agents share the port: each new connection may reach either). */
function getFresh(port: number, path: string): Promise<{ status: number; body: string; pid: number }> {
  return new Promise((resolve, reject) => {
    const req = get({ host: '127.0.0.1', port, path, agent: false, timeout: 2000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body, pid: Number(res.headers['x-nodemesh-agent-pid']) }));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
  });
}

/** The answer of the agent with this pid on a port the agents share (asks until it answers). */
async function askAgent(pid: number, path: string, port: number = PORTS.admin): Promise<{ status: number; body: string }> {
  return waitFor(`an answer from agent ${pid} on ${port}${path}`, async () => {
    const r = await getFresh(port, path).catch(() => undefined);
    return r?.pid === pid ? r : undefined;
  }, 20_000, 10);
}

interface AgentDump {
  ready: boolean;
  agent: { pid: number; notReady: string[]; holdsNode: boolean; supersededBy?: number; endpoints: { name: string; bound: boolean }[] };
  pendingPods: { pod: string; error: string; attempts: number }[];
  pods: { uid: string; namespace: string; name: string; ip: string }[];
}

async function dumpOf(pid: number): Promise<AgentDump> {
  return JSON.parse((await askAgent(pid, '/config_dump')).body) as AgentDump;
}

async function waitReady(pid: number): Promise<void> {
  await waitFor(`agent ${pid} ready`, async () => ((await askAgent(pid, '/healthz/ready', PORTS.ready)).status === 200 ? true : undefined), 60_000, 200);
}

/** Runs a command in a pod in the background; resolves with its exit code and output. */
function inPod(sd: string, pod: string, argv: string[]): { child: ChildProcess; output: () => string; done: Promise<{ code: number | null; out: string }> } {
  const child = spawnInPod(pod, argv, { stateDir: sd, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  const done = new Promise<{ code: number | null; out: string }>((resolve) => child.on('close', (code) => resolve({ code, out })));
  return { child, output: () => out, done };
}

function lastJson(out: string): Record<string, unknown> {
  const line = out.trim().split('\n').at(-1) ?? '';
  try {
    return JSON.parse(line) as Record<string, unknown>;
  } catch {
    throw new Error(`no JSON result in: ${out}`);
  }
}

describePrivileged('agent upgrade: two agents for one node', () => {
  let mesh: Mesh;
  let dir: string;
  let argv: string[] = [];
  let r: Redirector | undefined;
  const spawned: ChildProcess[] = [];
  const helpers: ChildProcess[] = [];
  const stopFiles: string[] = [];
  let pods: AgentDump['pods'] = [];

  /** A new agent for the same node and state dir: the running agent's own command line, plus `extra`. */
  const startAgent = (name: string, extra: string[] = []): { pid: number; log: string } => {
    const log = join(mesh.sd, 'agent', `${name}.log`);
    const out = openSync(log, 'a');
    const child = spawn(argv[0]!, [...argv.slice(1), ...extra], { stdio: ['ignore', out, out], env: { ...process.env, NODEMESH_LOG_LEVEL: 'info' } });
    spawned.push(child);
    return { pid: child.pid!, log };
  };
  const stopAgent = async (pid: number): Promise<void> => {
    process.kill(pid, 'SIGTERM');
    await waitFor(`agent ${pid} to exit`, () => (processAlive(pid) ? undefined : true), 60_000);
  };
  const who = (from: string, to: string, port = 8080) => mesh.client(from, ['who', mesh.ip(to), String(port)]);
  /** A denied connection is reset by the proxy (ENOTCONN when the reset lands before the first call). */
  const refused = (res: Record<string, unknown>) => res.outcome === 'reset' || res.outcome === 'error:107:Transport endpoint is not connected';
  /** The kernel side of enrollment for every pod: links pinned and nm_enrolled holding its IP. */
  const kernelState = () => {
    const hooks = r![kTestHooks]();
    return pods.map((p) => ({
      pod: `${p.namespace}/${p.name}`,
      links: r!.podAttachment(p.uid)?.links ?? [],
      enrolled: hooks.binding.mapLookup(hooks.mapFd('nm_enrolled'), ipv4Key(p.ip)) !== null,
    }));
  };
  const allEnrolled = () => pods.map((p) => ({ pod: `${p.namespace}/${p.name}`, links: [...POD_LINK_NAMES], enrolled: true }));
  /** Policy holds: the denied pair is refused, the allowed pairs get through (several new connections each). */
  const policyHolds = () => {
    for (let i = 0; i < 2; i++) {
      expect(refused(who('shop/frontend', 'shop/backend'))).toBe(true);
      expect(who('shop/batch', 'shop/backend').reply).toBeTruthy();
      expect(who('shop/frontend', 'shop/web').reply).toBeTruthy();
    }
  };
  const openFlow = async (pid: number, port: number) =>
    waitFor(`an open connection to port ${port} at agent ${pid}`, async () => {
      const flows = JSON.parse((await askAgent(pid, '/debug/flows')).body) as { open?: boolean; direction: string; dst: { port: number } }[];
      return flows.some((f) => f.open && f.direction === 'inbound' && f.dst.port === port) ? true : undefined;
    }, 20_000, 100);

  beforeAll(async () => {
    dir = writeConfig(config);
    mesh = await meshUp(dir, { controlPlane: true });
    const pid = agentPid(mesh.sd)!;
    argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean);
    pods = (await dumpOf(pid)).pods;
    r = await Redirector.open({ pinRoot: mesh.pinRoot });
  });

  afterAll(async () => {
    for (const c of helpers) if (c.pid && processAlive(c.pid)) c.kill('SIGKILL');
    for (const f of stopFiles) rmSync(f, { force: true });
    r?.close();
    // Agents this test started that are still running, other than the one mesh.down stops.
    const holder = mesh ? agentPid(mesh.sd) : undefined;
    for (const c of spawned) if (c.pid && c.pid !== holder && processAlive(c.pid)) await stopAgent(c.pid);
    await mesh?.down();
    for (const c of spawned) if (c.pid && processAlive(c.pid)) c.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
    if (mesh) rmSync(mesh.sd, { recursive: true, force: true });
    expect(leftovers(...(mesh ? [mesh.pinRoot] : []))).toEqual([]);
  });

  it('a second agent for the same node changes nothing, says what it cannot do, and hands the node back when it stops', async () => {
    const pid1 = agentPid(mesh.sd)!;
    expect(kernelState()).toEqual(allEnrolled());
    policyHolds();
    // Requests every 100 ms, and a connection open, across the second agent's whole life.
    const stop = join(mesh.sd, `loop1-stop-${process.pid}`);
    stopFiles.push(stop);
    const loop = inPod(mesh.sd, 'shop/batch', ['python3', '-c', LOOP_PY, mesh.ip('shop/backend'), '8080', stop, '1200']);
    helpers.push(loop.child);
    const long = inPod(mesh.sd, 'shop/batch', ['python3', clientPy, 'echoloop', mesh.ip('shop/backend'), '9090', '10']);
    helpers.push(long.child);
    await openFlow(pid1, 9090);
    // A port held without SO_REUSEPORT: the second agent cannot bind its metrics endpoint there.
    const held: Server = createServer();
    await new Promise<void>((res) => held.listen(0, '127.0.0.1', res));
    const heldPort = (held.address() as AddressInfo).port;

    const a2 = startAgent('agent2', ['--metrics', `127.0.0.1:${heldPort}`]);
    const notReady = await waitFor('agent 2 to say why it is not ready', async () => {
      const res = await askAgent(a2.pid, '/healthz/ready', PORTS.ready);
      return res.status === 503 && res.body.includes(`metrics endpoint 127.0.0.1:${heldPort} not bound`) ? res.body : undefined;
    });
    expect(notReady).toMatch(/EADDRINUSE/);
    await waitFor('agent 2 to take the node', async () => ((await dumpOf(a2.pid)).agent.holdsNode ? true : undefined));
    // Beside the first agent, everything stays as it was.
    expect(kernelState()).toEqual(allEnrolled());
    policyHolds();
    const d2 = await dumpOf(a2.pid);
    expect(d2.pods.map((p) => p.name).sort()).toEqual(['backend', 'batch', 'frontend', 'web']);
    expect(d2.pendingPods).toEqual([]);
    expect(d2.agent.endpoints.filter((e) => !e.bound).map((e) => e.name)).toEqual(['metrics']);
    expect((await dumpOf(pid1)).agent.supersededBy).toBe(a2.pid);
    expect(readFileSync(a2.log, 'utf8')).toMatch(/cannot bind an agent endpoint/);

    // Once the port is free, the retry binds it and the agent is ready.
    await new Promise((res) => held.close(res));
    await waitReady(a2.pid);
    expect(readFileSync(a2.log, 'utf8')).toMatch(/agent endpoint bound after retrying/);

    // The second agent stops: the first takes the node back, with every pod's inbound listener.
    await stopAgent(a2.pid);
    await waitFor('agent 1 to hold the node again', async () => ((await dumpOf(pid1)).agent.holdsNode ? true : undefined));
    expect(kernelState()).toEqual(allEnrolled());
    await waitFor('an inbound listener registered for every pod', () =>
      pods.every((p) => r!.inboundListenerCookie(p.ip, 'plaintext') !== null && r!.inboundListenerCookie(p.ip, 'hbone') !== null) ? true : undefined,
    );
    policyHolds();
    const longRes = lastJson((await long.done).out);
    expect(longRes.outcome).toBe('ok');
    expect(Number(longRes.round_trips)).toBeGreaterThanOrEqual(20);
    writeFileSync(stop, '');
    const res = lastJson((await loop.done).out) as { ok: number; fails: unknown[] };
    expect(res.fails).toEqual([]);
    expect(res.ok).toBeGreaterThanOrEqual(30);
    expect(readFileSync(a2.log, 'utf8')).toMatch(/handing the node back to the agent it was taken from/);
  });

  it('a rolling upgrade under steady load: no request fails, and the long-lived connection is drained by the old agent', async () => {
    const pid1 = agentPid(mesh.sd)!;
    const stop = join(mesh.sd, `loop-stop-${process.pid}`);
    stopFiles.push(stop);
    const loop = inPod(mesh.sd, 'shop/batch', ['python3', '-c', LOOP_PY, mesh.ip('shop/backend'), '8080', stop, '900']);
    helpers.push(loop.child);
    const long = inPod(mesh.sd, 'shop/batch', ['python3', clientPy, 'echoloop', mesh.ip('shop/backend'), '9090', '15']);
    helpers.push(long.child);
    let longDone = false;
    void long.done.then(() => (longDone = true));
    await openFlow(pid1, 9090);
    await sleep(1000); // the loop runs before the upgrade too

    const a2 = startAgent('agent2b', ['--drain-seconds', '3']);
    await waitReady(a2.pid);
    expect(longDone).toBe(false); // the connection spans the upgrade
    process.kill(pid1, 'SIGTERM');
    // The old agent drains: it stays up while it still relays the long-lived connection.
    await sleep(1000);
    expect(longDone).toBe(false);
    expect(processAlive(pid1)).toBe(true);

    const longRes = lastJson((await long.done).out);
    expect(longRes.outcome).toBe('ok');
    expect(Number(longRes.round_trips)).toBeGreaterThanOrEqual(40);
    // Its last connection ended: the old agent is done draining and exits.
    await waitFor('the old agent to exit', () => (processAlive(pid1) ? undefined : true), 20_000);
    const log1 = readFileSync(join(mesh.sd, 'agent', 'agent.log'), 'utf8');
    expect(log1).toMatch(/another agent took over this node/);
    expect(log1).toMatch(/drained: every open connection ended/);
    expect(log1).toMatch(/agent stopped/);

    await sleep(1000); // and after it
    writeFileSync(stop, '');
    const res = lastJson((await loop.done).out) as { ok: number; fails: unknown[] };
    expect(res.fails).toEqual([]);
    expect(res.ok).toBeGreaterThanOrEqual(30);
    expect((await dumpOf(a2.pid)).agent.holdsNode).toBe(true);
    policyHolds();
  });

  it('closes the connections still open when --drain-seconds is over', async () => {
    const pid2 = agentPid(mesh.sd)!; // the agent of the last test, started with --drain-seconds 3
    const long = inPod(mesh.sd, 'shop/batch', ['python3', clientPy, 'echoloop', mesh.ip('shop/backend'), '9090', '60']);
    helpers.push(long.child);
    let longDone = false;
    void long.done.then(() => (longDone = true));
    await openFlow(pid2, 9090);
    const a3 = startAgent('agent3');
    await waitReady(a3.pid);
    process.kill(pid2, 'SIGTERM');
    await sleep(1000);
    // Within the drain period the connection still runs; a new one goes to the new agent.
    expect(longDone).toBe(false);
    expect(processAlive(pid2)).toBe(true);
    expect(who('shop/batch', 'shop/backend').reply).toBeTruthy();
    const longRes = lastJson((await long.done).out);
    expect(['reset', 'eof']).toContain(longRes.outcome);
    await waitFor('the drained agent to exit', () => (processAlive(pid2) ? undefined : true), 20_000);
    const log2 = readFileSync(join(mesh.sd, 'agent', 'agent2b.log'), 'utf8');
    expect(log2).toMatch(/"by":"drain period over"[^\n]*drain over: closed the connections still open/);
    expect(who('shop/batch', 'shop/backend').reply).toBeTruthy();
  });

  it('an agent that cannot open a pod\'s listener leaves it enrolled and refusing connections, says so, and retries until it can', async () => {
    await stopAgent(agentPid(mesh.sd)!);
    expect(kernelState()).toEqual(allEnrolled());
    const squat = inPod(mesh.sd, 'shop/backend', ['python3', '-c', SQUAT_PY]);
    helpers.push(squat.child);
    await waitFor('the squatter to hold 127.0.0.1:15001', () => (squat.output().includes('holding') ? true : undefined));

    const a4 = startAgent('agent4');
    const body = await waitFor('the new agent to report the pod it cannot serve', async () => {
      const res = await getFresh(PORTS.ready, '/healthz/ready').catch(() => undefined);
      // Once it is done starting (every other pod adopted), the one it cannot serve is what is left.
      const waiting = res?.pid === a4.pid && res.status === 503 && res.body.includes('pod shop/backend enrolled but not served');
      return waiting && !res.body.includes('starting') ? res.body : undefined;
    });
    expect(body).toMatch(/EADDRINUSE/);
    const d = await dumpOf(a4.pid);
    expect(d.pendingPods.map((p) => p.pod)).toEqual(['shop/backend']);
    expect(d.pendingPods[0]!.error).toMatch(/EADDRINUSE/);
    expect(d.pods.map((p) => p.name).sort()).toEqual(['batch', 'frontend', 'web']);
    // Still enrolled (links pinned, nm_enrolled holds it): sk_lookup drops its inbound SYNs
    // and the kernel answers with a reset, so nothing reaches the app, from outside the mesh
    // (refused) as from a mesh pod (the agent accepted it and resets it when its upstream
    // connect is refused).
    expect(kernelState()).toEqual(allEnrolled());
    // nodemesh capture, as an operator would run it, shows the dropped SYN with its reason.
    const cap = spawn(cli, ['capture', '--json', '--verdict', 'dropped', '--count', '1', '--state-dir', mesh.sd], { stdio: ['ignore', 'pipe', 'pipe'] });
    helpers.push(cap);
    let capOut = '';
    let capErr = '';
    cap.stdout!.on('data', (d: Buffer) => (capOut += d));
    cap.stderr!.on('data', (d: Buffer) => (capErr += d));
    await waitFor('the capture to start', () => (capErr.includes('capturing on node') ? true : undefined), 15_000, 20);
    expect(mesh.client('legacy/client', ['hang', mesh.ip('shop/backend'), '8080']).outcome).toBe('error:111:Connection refused');
    expect(mesh.client('shop/batch', ['hang', mesh.ip('shop/backend'), '8080']).outcome).toBe('reset');
    expect(await waitFor('the capture to print the dropped SYN', () => (cap.exitCode !== null ? cap.exitCode : undefined), 15_000), capErr).toBe(0);
    expect(JSON.parse(capOut.trim())).toMatchObject({ verdict: 'dropped', reason: 'no_listener', source: 'kernel', src: { ip: mesh.ip('legacy/client') }, dst: { ip: mesh.ip('shop/backend'), port: 8080, pod: 'shop/backend' } });
    // The pods it could adopt work, from both.
    expect(who('legacy/client', 'shop/web').reply).toBeTruthy();
    expect(who('shop/batch', 'shop/web').reply).toBeTruthy();
    // Retried with backoff.
    await waitFor('a second attempt', async () => ((await dumpOf(a4.pid)).pendingPods[0]?.attempts ?? 0) >= 2 ? true : undefined);

    squat.child.kill('SIGKILL');
    await squat.done;
    await waitReady(a4.pid);
    const after = await dumpOf(a4.pid);
    expect(after.pendingPods).toEqual([]);
    expect(after.pods.map((p) => p.name).sort()).toEqual(['backend', 'batch', 'frontend', 'web']);
    expect(readFileSync(a4.log, 'utf8')).toMatch(/pod enrolled after retrying/);
    policyHolds();
  });
});
