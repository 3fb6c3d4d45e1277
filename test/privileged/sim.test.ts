// The node simulator end to end, as root: real netns, real CNI bridge/host-local/loopback,
// real cgroups and real servers (python3 http.server, redis-server), driven through the CLI
// (bin/nodemesh, so `make ts` first) and the library. Ends by checking the host is exactly
// as before. The chained run uses a fake agent (test/helpers/fake-cni-agent.ts) because the
// real agent is tested on its own.
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, rmSync, statSync, unlinkSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { describePrivileged } from '../helpers/privileged.js';
import { startFakeCniAgent, type FakeCniAgent } from '../helpers/fake-cni-agent.js';
import { cniPluginBinary, configDir, filesUnder, hostSnapshot, runCli, tempDir, type HostSnapshot } from '../helpers/sim.js';
import { installChainedPlugin, uninstallChainedPlugin } from '../../src/cluster/cni.js';
import { listPods, simDown, simUp, type SimPodInfo } from '../../src/sim/index.js';
import { cgroupPids, findCgroup2Root } from '../../src/sim/cgroup.js';
import { cniAdd, cniDel } from '../../src/sim/cni.js';
import { readNetConf } from '../../src/sim/conflist.js';
import { simPaths } from '../../src/sim/paths.js';
import { spawnInPod } from '../../src/sim/query.js';

const SUBNET = '10.249.0.0/24';
const WEB_IP = '10.249.0.50';
const CLIENT_UID = '5e1f0c2a-7b3d-4e8f-9a6b-1c2d3e4f5a6b';

const NS = `apiVersion: v1
kind: Namespace
metadata:
  name: simt
  labels:
    nodemesh.io/dataplane-mode: ambient
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: simt}
spec:
  clusterIP: 10.96.0.10
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
`;
const WEB = `apiVersion: v1
kind: Pod
metadata:
  name: web
  namespace: simt
  labels: {app: web}
spec:
  containers:
    - name: http
      image: ignored
      command: [python3, -m, http.server, "8080", --bind, 0.0.0.0]
      ports: [{containerPort: 8080}]
status:
  podIP: ${WEB_IP}
`;
const REDIS = `apiVersion: v1
kind: Pod
metadata: {name: redis, namespace: simt}
spec:
  containers:
    - name: redis
      command: [redis-server]
      args: [--port, "6379", --bind, 0.0.0.0, --protected-mode, "no", --save, "", --appendonly, "no"]
      ports: [{containerPort: 6379}]
`;
const CLIENT = `apiVersion: v1
kind: Pod
metadata: {name: client, namespace: simt, uid: ${CLIENT_UID}}
spec:
  containers:
    - name: client
      command: [sleep, infinity]
`;
const podYaml = (name: string, extra = '') => `apiVersion: v1
kind: Pod
metadata: {name: ${name}, namespace: simt}
spec:
  containers:
    - name: main
      command: [sleep, infinity]
${extra}`;

let stateDir: string;
let dir: string;
let cgroupRoot: string;
let before: HostSnapshot;
let agent: FakeCniAgent | undefined;
const extraDirs: string[] = [];

/** CLI args with --state-dir right after the command words (before any `--`). */
function sd(...args: string[]): string[] {
  return [args[0]!, args[1]!, '--state-dir', stateDir, ...args.slice(2)];
}

function pods(): SimPodInfo[] {
  return listPods({ stateDir });
}

function ipamFiles(): string[] {
  return filesUnder(simPaths(stateDir).ipamDir).filter((f) => /\/\d+\.\d+\.\d+\.\d+$/.test(f));
}

/** The state letter of /proc/<pid>/stat (R, S, Z, ...), or undefined when there is no such process. */
function procState(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[0];
  } catch {
    return undefined;
  }
}

function stateFilePods(): unknown {
  return (JSON.parse(readFileSync(simPaths(stateDir).stateFile, 'utf8')) as { pods: unknown }).pods;
}

function mkdir(files: Record<string, string>): string {
  const d = configDir(files);
  extraDirs.push(d);
  return d;
}

describePrivileged('node simulator', () => {
  beforeAll(() => {
    cniPluginBinary(); // fail early with "run make cni" rather than inside a CNI error
    cgroupRoot = findCgroup2Root();
    before = hostSnapshot(cgroupRoot);
    if (before.netns.length || before.links.length || before.cgroups.length) {
      throw new Error(`another simulator is running on this host (${JSON.stringify(before)}); stop it first (nodemesh sim down)`);
    }
    stateDir = tempDir('nm-sim-priv-');
    dir = mkdir({ 'ns.yaml': NS, 'web.yaml': WEB, 'redis.yaml': REDIS, 'client.yaml': CLIENT });
  });

  afterAll(async () => {
    await agent?.close();
    // Whatever a failed test left behind.
    if (stateDir) await simDown({ stateDir }).catch(() => undefined);
    if (stateDir) rmSync(stateDir, { recursive: true, force: true });
    for (const d of extraDirs) rmSync(d, { recursive: true, force: true });
  });

  it('sim up creates the pods and prints namespace/name, IP, node and uid', async () => {
    const r = await runCli(sd('sim', 'up', dir, '--subnet', SUBNET));
    expect(r.stderr).not.toContain('error');
    expect(r.code).toBe(0);
    const lines = r.stdout.trim().split('\n');
    expect(lines[0]).toMatch(/^POD\s+IP\s+NODE\s+UID/);
    expect(lines).toHaveLength(4);
    expect(r.stdout).toMatch(new RegExp(`simt/web\\s+${WEB_IP.replace(/\./g, '\\.')}\\s+${hostname()}`));
    expect(r.stdout).toContain(CLIENT_UID);
    expect(r.stderr).toContain('waiting for port 8080'); // progress on stderr
  });

  it('sim pods --json gives each pod its IP, node, uid, netns, cgroup and live pids', async () => {
    const r = await runCli(sd('sim', 'pods', '--json'));
    expect(r.code).toBe(0);
    const list = JSON.parse(r.stdout) as SimPodInfo[];
    expect(list.map((p) => `${p.namespace}/${p.name}`)).toEqual(['simt/client', 'simt/redis', 'simt/web']);
    for (const p of list) {
      expect(p).toMatchObject({ namespace: 'simt', node: hostname(), status: 'Running' });
      expect(p.ip.startsWith('10.249.0.')).toBe(true);
      expect(p.uid).toMatch(/^[0-9a-f-]{36}$/);
      expect(p.cgroup).toBe(join(cgroupRoot, 'nodemesh-sim', 'kubepods', 'besteffort', `pod${p.uid}`));
      expect(existsSync(p.netnsPath)).toBe(true);
      // Each process is in the pod's cgroup and in the pod's netns.
      expect(p.pids).toHaveLength(1);
      expect(cgroupPids(p.cgroup)).toContain(p.pids[0]);
      expect(statSync(`/proc/${p.pids[0]}/ns/net`).ino).toBe(statSync(p.netnsPath).ino);
    }
    expect(list.find((p) => p.name === 'web')!.ip).toBe(WEB_IP);
    expect(list.find((p) => p.name === 'client')!.uid).toBe(CLIENT_UID);
  });

  it('sim exec runs curl from the client pod to the server pod IP and passes exit codes through', async () => {
    const curl = await runCli(sd('sim', 'exec', 'simt/client', '--', 'curl', '-sS', '--max-time', '10', `http://${WEB_IP}:8080/`));
    expect(curl.stderr).toBe('');
    expect(curl.code).toBe(0);
    expect(curl.stdout).toContain('Directory listing');
    const redisIp = pods().find((p) => p.name === 'redis')!.ip;
    const ping = await runCli(sd('sim', 'exec', 'simt/client', '--', 'redis-cli', '-h', redisIp, 'ping'));
    expect(ping.stdout.trim()).toBe('PONG');
    expect((await runCli(sd('sim', 'exec', 'simt/client', '--', 'sh', '-c', 'exit 3'))).code).toBe(3);
    expect((await runCli(sd('sim', 'exec', 'simt/client', '--', 'sh', '-c', 'kill -KILL $$'))).code).toBe(137);
    // A refused connection (no listener on 9) fails curl with its own code (7).
    expect((await runCli(sd('sim', 'exec', 'simt/client', '--', 'curl', '-sS', `http://${WEB_IP}:9/`))).code).toBe(7);
  });

  it("sim exec runs in the pod's cgroup and netns, which has no default route", async () => {
    const client = pods().find((p) => p.name === 'client')!;
    const r = await runCli(sd('sim', 'exec', 'simt/client', '--', 'sh', '-c', 'cat /proc/self/cgroup; ip route'));
    expect(r.code).toBe(0);
    expect(r.stdout).toContain(`0::/nodemesh-sim/kubepods/besteffort/pod${client.uid}`);
    expect(r.stdout).toContain(`10.249.0.0/24 dev eth0`);
    expect(r.stdout).not.toContain('default');
  });

  it('spawnInPod returns a ChildProcess running in the pod', async () => {
    const child = spawnInPod('simt/client', ['sh', '-c', 'ip -4 -o addr show eth0'], { stateDir, stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout!.on('data', (b: Buffer) => (out += b.toString()));
    const code = await new Promise<number | null>((r) => child.on('close', r));
    expect(code).toBe(0);
    expect(out).toContain(pods().find((p) => p.name === 'client')!.ip);
  });

  it('a second sim up leaves running pods alone and adds new ones', async () => {
    const pidsBefore = pods().map((p) => [p.name, p.pids, p.ip]);
    const again = await runCli(sd('sim', 'up', dir));
    expect(again.code).toBe(0);
    expect(again.stderr).toContain('0 created, 0 restarted, 3 unchanged');
    expect(pods().map((p) => [p.name, p.pids, p.ip])).toEqual(pidsBefore);
    writeFileSync(join(dir, 'extra.yaml'), podYaml('extra'));
    const more = await runCli(sd('sim', 'up', dir));
    expect(more.code).toBe(0);
    expect(more.stderr).toContain('1 created, 0 restarted, 3 unchanged');
    expect(pods().map((p) => p.name)).toEqual(['client', 'extra', 'redis', 'web']);
    unlinkSync(join(dir, 'extra.yaml'));
    // Removed from the dir, still up: sim up never deletes.
    expect((await runCli(sd('sim', 'up', dir))).code).toBe(0);
    expect(pods().map((p) => p.name)).toContain('extra');
  });

  it('refuses a pod that names a node while the simulator runs in host mode, creating nothing', async () => {
    const before = pods().map((p) => p.name);
    const err = await simUp(mkdir({ 'n.yaml': podYaml('elsewhere').replace('spec:\n', 'spec:\n  nodeName: node-b\n') }), { stateDir }).catch((e: unknown) => e);
    expect((err as { code?: string }).code).toBe('NM_ERR_CONFIG_CONFLICT');
    expect(pods().map((p) => p.name)).toEqual(before);
    expect(execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' })).not.toMatch(/nm-node\./);
  });

  it('restarts the containers of a pod whose processes died, keeping its netns and IP', async () => {
    const d = mkdir({ 'p.yaml': podYaml('phoenix') });
    await simUp(d, { stateDir });
    const first = pods().find((p) => p.name === 'phoenix')!;
    process.kill(first.pids[0]!, 'SIGKILL');
    for (let i = 0; i < 100 && cgroupPids(first.cgroup).length > 0; i++) await new Promise((r) => setTimeout(r, 20));
    expect(pods().find((p) => p.name === 'phoenix')!.status).toBe('Exited');
    const r = await simUp(d, { stateDir });
    expect(r.restarted.map((p) => p.name)).toEqual(['phoenix']);
    const again = pods().find((p) => p.name === 'phoenix')!;
    expect(again).toMatchObject({ status: 'Running', ip: first.ip, netns: first.netns });
    expect(again.pids).not.toEqual(first.pids);
  });

  it('recreates a pod a crashed sim up left half-created', async () => {
    const d = mkdir({ 'p.yaml': podYaml('lazarus') });
    await simUp(d, { stateDir });
    const file = simPaths(stateDir).stateFile;
    const st = JSON.parse(readFileSync(file, 'utf8')) as { pods: { name: string; phase: string }[] };
    st.pods.find((p) => p.name === 'lazarus')!.phase = 'Creating';
    writeFileSync(file, JSON.stringify(st));
    expect(pods().find((p) => p.name === 'lazarus')!.status).toBe('Creating');
    const lines: string[] = [];
    const r = await simUp(d, { stateDir, onProgress: (l) => lines.push(l) });
    expect(r.created.map((p) => p.name)).toEqual(['lazarus']);
    expect(lines.join('\n')).toContain('left half-created');
    expect(pods().find((p) => p.name === 'lazarus')!.status).toBe('Running');
  });

  /** Runs a failing `sim up` and checks it changed nothing on the host or in the state. */
  async function failsCleanly(files: Record<string, string>, code: string, ...expected: (string | RegExp)[]): Promise<string> {
    const snapshot = hostSnapshot(cgroupRoot);
    const podsBefore = stateFilePods();
    const ipam = ipamFiles();
    const r = await runCli(sd('sim', 'up', mkdir(files)));
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain(`(${code})`);
    for (const e of expected) expect(r.stderr).toMatch(e);
    expect(hostSnapshot(cgroupRoot)).toEqual(snapshot);
    expect(stateFilePods()).toEqual(podsBefore);
    expect(ipamFiles()).toEqual(ipam);
    return r.stderr;
  }

  it('rejects malformed YAML with file:line and changes nothing', async () => {
    await failsCleanly({ 'bad.yaml': 'apiVersion: v1\nkind: Pod\nmetadata: {name: x\n  bad: [\n' }, 'NM_ERR_CONFIG_YAML', /bad\.yaml:\d+:/);
  });

  it('rejects a Pod with no command and changes nothing', async () => {
    const noCmd = `apiVersion: v1\nkind: Pod\nmetadata: {name: nocmd, namespace: simt}\nspec:\n  containers:\n    - name: c\n      image: busybox\n`;
    await failsCleanly({ 'p.yaml': noCmd }, 'NM_ERR_CONFIG_INVALID', /p\.yaml:1: .*command is required/);
  });

  it('rejects a second sim up whose pod asks for an IP another pod holds, and changes nothing', async () => {
    await failsCleanly({ 'thief.yaml': podYaml('thief', `status:\n  podIP: ${WEB_IP}\n`), 'ok.yaml': podYaml('innocent') }, 'NM_ERR_CONFIG_CONFLICT', new RegExp(`${WEB_IP.replace(/\./g, '\\.')} is already taken by pod simt/web`));
    expect(pods().map((p) => p.name)).not.toContain('innocent');
  });

  it('shows the CNI plugin JSON error when the chain fails, and removes the half-made pod', async () => {
    // The nodemesh plugin chained with no agent behind its socket: ADD must fail closed.
    const deadDir = tempDir('nm-dead-agent-');
    extraDirs.push(deadDir);
    const deadSock = join(deadDir, 'cni.sock');
    installChainedPlugin(stateDir, { type: 'nodemesh-cni', agentSocket: deadSock });
    try {
      const err = await failsCleanly({ 'p.yaml': podYaml('orphan') }, 'NM_ERR_CNI', /CNI plugin "nodemesh-cni" ADD failed/, /"code":11/, new RegExp(deadSock.replace(/\//g, '\\/')));
      expect(err).toContain('pod simt/orphan');
    } finally {
      uninstallChainedPlugin(stateDir);
    }
  });

  it('reports a CNI ADD into a missing netns with the plugin error and leaks no address', async () => {
    const ipam = ipamFiles();
    const { list } = readNetConf(simPaths(stateDir).netDir);
    const rt = { containerId: 'nm-test-missing-netns', netnsPath: '/run/netns/nm-does-not-exist', ifName: 'eth0', args: 'IgnoreUnknown=1', cniPath: ['/usr/lib/cni'] };
    await expect(cniAdd(list, rt)).rejects.toMatchObject({ code: 'NM_ERR_CNI', message: expect.stringMatching(/"bridge" ADD failed.*failed to open netns/) });
    await cniDel(list, rt);
    expect(ipamFiles()).toEqual(ipam);
  });

  it('runs the chain with nodemesh-cni last: the agent gets netns, uid, namespace, name and IP', async () => {
    agent = await startFakeCniAgent();
    installChainedPlugin(stateDir, { type: 'nodemesh-cni', agentSocket: agent.socketPath, timeoutSeconds: 10 });
    const already = pods().length;
    const r = await simUp(mkdir({ 'cap.yaml': podYaml('captured') }), { stateDir });
    expect(r.created.map((p) => p.name)).toEqual(['captured']);
    expect(r.pods).toHaveLength(already + 1);
    const pod = r.created[0]!;
    expect(agent.requests).toHaveLength(1);
    const req = agent.requests[0]!;
    expect(req).toMatchObject({ command: 'ADD', netns: pod.netnsPath, ifName: 'eth0', containerId: pod.containerId });
    expect(req.argsMap).toMatchObject({ K8S_POD_NAMESPACE: 'simt', K8S_POD_NAME: 'captured', K8S_POD_UID: pod.uid, K8S_POD_INFRA_CONTAINER_ID: pod.containerId });
    expect(req.config).toMatchObject({ type: 'nodemesh-cni', name: 'nodemesh-sim', cniVersion: '1.0.0' });
    const prev = req.config.prevResult as { ips: { address: string }[] };
    expect(prev.ips.map((i) => i.address)).toContain(`${pod.ip}/24`);
    expect(req.path.split(':')[0]).toBe('/usr/lib/cni');
  });

  it('sim down removes everything, even with the agent gone, and leaves the host as before', async () => {
    const recorded = pods();
    await agent!.close(); // DEL must still succeed: the plugin exits 0 when it cannot reach the agent
    agent = undefined;
    const r = await runCli(sd('sim', 'down'));
    expect(r.stderr).not.toContain('warning');
    expect(r.code).toBe(0);
    expect(r.stderr).toContain(`removed ${recorded.length} pod(s)`);
    const after = hostSnapshot(cgroupRoot);
    expect(after).toEqual(before);
    expect(after.netns).toEqual([]);
    expect(after.links).toEqual([]);
    expect(after.cgroups).toEqual([]);
    expect(existsSync(simPaths(stateDir).ipamDir)).toBe(false);
    expect(existsSync(simPaths(stateDir).stateFile)).toBe(false);
    for (const p of recorded) {
      expect(existsSync(p.netnsPath)).toBe(false);
      expect(existsSync(p.cgroup)).toBe(false);
      for (const pid of p.pids) {
        // Gone, or a zombie its (new) parent has not reaped yet: never running.
        expect([undefined, 'Z']).toContain(procState(pid));
      }
    }
    // Logs and the node config stay; --purge removes them.
    expect(existsSync(simPaths(stateDir).netDir)).toBe(true);
    const again = await runCli(sd('sim', 'down'));
    expect(again.code).toBe(0);
    expect(again.stderr).toContain('nothing to remove');
  });

  it('sim down without state.json finds and removes a crashed run', async () => {
    uninstallChainedPlugin(stateDir); // the agent is gone: with the plugin chained, ADD fails closed
    const up = await runCli(sd('sim', 'up', mkdir({ 'a.yaml': podYaml('a'), 'b.yaml': podYaml('b') })));
    expect(up.stderr).not.toContain('error');
    expect(up.code).toBe(0);
    const recorded = pods();
    unlinkSync(simPaths(stateDir).stateFile);
    const refused = await runCli(sd('sim', 'up', dir));
    expect(refused.code).not.toBe(0);
    expect(refused.stderr).toContain('(NM_ERR_SIM_STATE)');
    const r = await runCli(sd('sim', 'down', '--purge'));
    expect(r.code).toBe(0);
    expect(r.stderr).toContain('found by scanning');
    expect(hostSnapshot(cgroupRoot)).toEqual(before);
    expect(existsSync(simPaths(stateDir).simDir)).toBe(false);
    for (const p of recorded) expect(existsSync(p.netnsPath)).toBe(false);
  });
});
