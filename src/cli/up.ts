// `nodemesh up` and `nodemesh down`: the whole embedded setup (simulated pods + agent) in
// the background, and its complete removal.
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { get } from 'node:http';
import { join, resolve } from 'node:path';
import { agentPaths, DEFAULT_PIN_ROOT, stateDir } from '../agent/index.js';
import { NodemeshError } from '../errors.js';
import { Redirector } from '../redirect/index.js';
import { listPods, simDown, simUp, uninstallChainedPlugin } from '../sim/index.js';
import { parse, usageError, type Command } from './command.js';
import { packageRoot } from './paths.js';

export const ADMIN = 'http://127.0.0.1:15000';

export function progress(msg: string): void {
  process.stderr.write(`==> ${msg}\n`);
}

export function httpGet(url: string, timeoutMs = 2000): Promise<{ status: number; body: string }> {
  return new Promise((res, rej) => {
    const req = get(url, { timeout: timeoutMs }, (r) => {
      let body = '';
      r.setEncoding('utf8');
      r.on('data', (d: string) => (body += d));
      r.on('end', () => res({ status: r.statusCode ?? 0, body }));
    });
    req.on('timeout', () => req.destroy(new Error(`GET ${url} timed out`)));
    req.on('error', rej);
  });
}

export async function getJson<T>(url: string): Promise<T> {
  const r = await httpGet(url);
  if (r.status !== 200) throw new Error(`GET ${url}: HTTP ${r.status}: ${r.body.trim()}`);
  return JSON.parse(r.body) as T;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

export function agentPid(sd: string): number | undefined {
  return pidIn(agentPaths(sd).pidFile);
}

function tail(file: string, lines = 15): string {
  try {
    return readFileSync(file, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}

export const CP_ADMIN = 'http://127.0.0.1:15014';
export const CP_ADDRESS = '127.0.0.1:15012';

/** Where `nodemesh up` keeps the embedded control plane's state (token, root, log). */
export function controlPlaneDir(sd: string): string {
  return join(sd, 'control-plane');
}

function pidIn(file: string): number | undefined {
  try {
    const pid = Number(readFileSync(file, 'utf8').trim());
    return pid > 0 && alive(pid) ? pid : undefined;
  } catch {
    return undefined;
  }
}

/** Starts a nodemesh process in the background and waits for its readiness URL. */
async function startDaemon(what: string, args: string[], logFile: string, pidFile: string, readyUrl: string): Promise<number> {
  const existing = pidIn(pidFile);
  if (existing) return existing;
  const out = openSync(logFile, 'a');
  const child = spawn(process.execPath, [join(packageRoot, 'dist', 'cli', 'main.js'), ...args], {
    detached: true,
    stdio: ['ignore', out, out],
    env: { ...process.env, NODEMESH_LOG_LEVEL: process.env.NODEMESH_LOG_LEVEL ?? 'info' },
  });
  child.unref();
  const pid = child.pid!;
  writeFileSync(pidFile, `${pid}\n`);
  const deadline = Date.now() + 30_000;
  while (Date.now() < deadline) {
    if (!alive(pid)) {
      rmSync(pidFile, { force: true });
      throw new NodemeshError('NM_ERR_AGENT_UNAVAILABLE', `the ${what} exited during start; last lines of ${logFile}:\n${tail(logFile)}`);
    }
    try {
      if ((await httpGet(readyUrl, 500)).status === 200) return pid;
    } catch {
      /* not listening yet */
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  process.kill(pid, 'SIGTERM');
  throw new NodemeshError('NM_ERR_TIMEOUT', `the ${what} did not become ready in 30 s; see ${logFile}:\n${tail(logFile)}`);
}

async function stopPid(pid: number | undefined): Promise<boolean> {
  if (!pid) return false;
  process.kill(pid, 'SIGTERM');
  const deadline = Date.now() + 10_000;
  while (alive(pid) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
  if (alive(pid)) process.kill(pid, 'SIGKILL');
  return true;
}

/** Starts the agent in local mode (pod metadata from `dir`, no control plane). */
export async function startAgent(dir: string, sd: string, extra: string[] = []): Promise<number> {
  return startAgentWith(sd, ['--config', dir, ...extra]);
}

/** Starts the agent against the embedded control plane that `startControlPlane` ran. */
export async function startAgentWithControlPlane(sd: string, extra: string[] = []): Promise<number> {
  const cp = controlPlaneDir(sd);
  return startAgentWith(sd, ['--control-plane', CP_ADDRESS, '--token-file', join(cp, 'token'), '--root-cert', join(cp, 'root-cert.pem'), ...extra]);
}

async function startAgentWith(sd: string, args: string[]): Promise<number> {
  const paths = agentPaths(sd);
  mkdirSync(paths.dir, { recursive: true });
  return startDaemon('agent', ['agent', '--state-dir', sd, ...args], paths.logFile, paths.pidFile, `${ADMIN}/healthz/ready`);
}

export async function stopAgent(sd: string): Promise<boolean> {
  return stopPid(agentPid(sd));
}

export async function startControlPlane(dir: string, sd: string): Promise<number> {
  const cp = controlPlaneDir(sd);
  mkdirSync(cp, { recursive: true });
  return startDaemon('control plane', ['control-plane', '--config', dir, '--state-dir', cp], join(cp, 'control-plane.log'), join(cp, 'control-plane.pid'), `${CP_ADMIN}/healthz/ready`);
}

export async function stopControlPlane(sd: string): Promise<boolean> {
  const file = join(controlPlaneDir(sd), 'control-plane.pid');
  const stopped = await stopPid(pidIn(file));
  rmSync(file, { force: true });
  return stopped;
}

interface DumpPod {
  namespace: string;
  name: string;
  ip: string;
}

/** Brings everything up; returns once every ambient pod's traffic is captured. */
export async function up(dirArg: string, sd: string, opts: { local?: boolean } = {}): Promise<void> {
  const dir = resolve(dirArg);
  if (!existsSync(dir)) throw usageError(`config directory ${dir} does not exist`);
  if (opts.local) {
    progress(`starting the node agent in local mode (log: ${agentPaths(sd).logFile})`);
    await startAgent(dir, sd);
  } else {
    progress(`starting the control plane (log: ${join(controlPlaneDir(sd), 'control-plane.log')})`);
    await startControlPlane(dir, sd);
    progress(`starting the node agent (log: ${agentPaths(sd).logFile}); it waits for its first xDS sync`);
    await startAgentWithControlPlane(sd);
  }
  progress('creating pods (CNI bridge + host-local + nodemesh-cni)');
  await simUp(dir, { stateDir: sd, onProgress: (l) => progress(l) });
  const dump = await getJson<{ pods: DumpPod[] }>(`${ADMIN}/config_dump`);
  const enrolled = new Set(dump.pods.map((p) => `${p.namespace}/${p.name}`));
  const pods = await listPods({ stateDir: sd });
  const rows = pods.map((p) => [`${p.namespace}/${p.name}`, p.ip, p.node, enrolled.has(`${p.namespace}/${p.name}`) ? 'captured' : 'not enrolled']);
  printTable(['POD', 'IP', 'NODE', 'MESH'], rows);
  process.stdout.write(`\nagent admin: ${ADMIN}/config_dump   metrics: http://127.0.0.1:15020/metrics\n${opts.local ? '' : `control plane: ${CP_ADDRESS} (xDS, CA), admin ${CP_ADMIN}/debug/config-errors\n`}state and logs: ${sd}\n`);
}

export async function down(sd: string, pinRoot = DEFAULT_PIN_ROOT): Promise<void> {
  progress('removing pods');
  await simDown({ stateDir: sd, onProgress: (l) => progress(l) });
  progress('stopping the agent');
  await stopAgent(sd);
  if (await stopControlPlane(sd)) progress('stopped the control plane');
  rmSync(controlPlaneDir(sd), { recursive: true, force: true });
  uninstallChainedPlugin(sd);
  progress(`removing pinned programs under ${pinRoot}`);
  await Redirector.destroyAll(pinRoot);
  rmSync(agentPaths(sd).dir, { recursive: true, force: true });
}

export function printTable(head: string[], rows: string[][]): void {
  const w = head.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (r: string[]) => r.map((c, i) => c.padEnd(w[i]!)).join('  ').trimEnd();
  process.stdout.write([line(head), ...rows.map(line)].join('\n') + '\n');
}

export const upCommand: Command = {
  path: ['up'],
  summary: 'bring up simulated pods and the node agent in the background',
  help: `Usage: nodemesh up <dir> [--state-dir <dir>] [--local]

Starts the control plane (xDS + CA on ${CP_ADDRESS}, watching <dir>) and the node agent in
the background, then creates every Pod of <dir> with the node simulator (real CNI plugins, one netns and cgroup per pod). Pods labelled (or in a namespace
labelled) nodemesh.io/dataplane-mode=ambient are captured. Returns once they are.

With --local, no control plane runs: the agent reads pod metadata from <dir> itself and
enforces no policy.

State and logs: <state-dir>/agent/agent.log, <state-dir>/control-plane/control-plane.log,
<state-dir>/sim/ (default /run/nodemesh). Stop with 'nodemesh down'.
`,
  async run(argv) {
    const { values, positionals } = parse(argv, { 'state-dir': { type: 'string' }, local: { type: 'boolean' } });
    if (positionals.length !== 1) throw usageError('expected exactly one config directory: nodemesh up <dir>');
    await up(positionals[0]!, stateDir(values['state-dir']), { local: values.local ?? false });
    return 0;
  },
};

export const downCommand: Command = {
  path: ['down'],
  summary: 'stop and remove everything `nodemesh up` started',
  help: `Usage: nodemesh down [--state-dir <dir>] [--pin-root <dir>]

Removes the simulated pods, stops the agent, unchains nodemesh-cni, and removes the pinned
eBPF programs and maps. Safe to run twice.
`,
  async run(argv) {
    const { values } = parse(argv, { 'state-dir': { type: 'string' }, 'pin-root': { type: 'string' } }, false);
    await down(stateDir(values['state-dir']), values['pin-root'] ?? DEFAULT_PIN_ROOT);
    return 0;
  },
};
