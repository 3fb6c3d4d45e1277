// Background daemons of the embedded setup (control plane, agents): start one detached,
// optionally inside a network namespace, wait for its readiness, stop it by its pid file.
import { spawn } from 'node:child_process';
import { mkdirSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { get } from 'node:http';
import { join } from 'node:path';
import { AgentError, TimeoutError } from '../errors.js';
import { nsenter } from '../sim/index.js';
import { packageRoot } from './paths.js';
import { pidAlive } from '../pids.js';

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

function tail(file: string, lines = 15): string {
  try {
    return readFileSync(file, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}

export function pidIn(file: string): number | undefined {
  try {
    const pid = Number(readFileSync(file, 'utf8').trim());
    return pid > 0 && pidAlive(pid) ? pid : undefined;
  } catch {
    return undefined;
  }
}

/** Where `nodemesh up` keeps the embedded control plane's state (token, root, log). */
export function controlPlaneDir(sd: string): string {
  return join(sd, 'control-plane');
}

/** The control plane's files under controlPlaneDir(sd). */
export function controlPlaneFiles(sd: string): { dir: string; logFile: string; pidFile: string } {
  const dir = controlPlaneDir(sd);
  return { dir, logFile: join(dir, 'control-plane.log'), pidFile: join(dir, 'control-plane.pid') };
}

/** What the embedded control plane reads: a config dir, or the Kubernetes API through a kubeconfig. */
export type ControlPlaneSource = string | { kubeconfig: string };

/**
 * The control plane as `nodemesh up` runs it, on `source`: its command, log and pid file (the
 * state dir is created). `extraArgs` and where it runs are the caller's.
 */
export function controlPlaneDaemon(source: ControlPlaneSource, sd: string, extraArgs: string[] = []): Pick<DaemonSpec, 'what' | 'args' | 'logFile' | 'pidFile'> {
  const f = controlPlaneFiles(sd);
  mkdirSync(f.dir, { recursive: true });
  const from = typeof source === 'string' ? ['--config', source] : ['--kubeconfig', source.kubeconfig];
  return { what: 'control plane', args: ['control-plane', ...from, '--state-dir', f.dir, ...extraArgs], logFile: f.logFile, pidFile: f.pidFile };
}

/** How a daemon is started: the argv after `node dist/cli/main.js`, optionally inside a netns. */
export interface DaemonSpec {
  what: string;
  args: string[];
  logFile: string;
  pidFile: string;
  /** Resolves true once the daemon is ready. */
  ready: () => Promise<boolean>;
  /** Run inside this network namespace (nsenter --net; the mount namespace stays the host's). */
  netnsPath?: string;
  env?: NodeJS.ProcessEnv;
}

/** Readiness by GET in this process's netns. */
export function httpReady(url: string): () => Promise<boolean> {
  return async () => {
    try {
      return (await httpGet(url, 500)).status === 200;
    } catch {
      return false;
    }
  };
}

/**
 * V8 flags of an agent process. Node lets the young generation grow to 16 MB semi-spaces, and
 * they stay resident in an idle agent: 2 MB ones keep ~10 MB less RSS (docs/benchmarks.md,
 * "Agent memory"); the request path's short-lived objects still die young at that size.
 */
export const AGENT_NODE_FLAGS: readonly string[] = ['--max-semi-space-size=2'];

/** Starts a nodemesh process in the background and waits until it is ready. */
export async function startDaemon(d: DaemonSpec): Promise<number> {
  const existing = pidIn(d.pidFile);
  if (existing) return existing;
  const out = openSync(d.logFile, 'a');
  const flags = d.args[0] === 'agent' ? AGENT_NODE_FLAGS : [];
  const argv = [process.execPath, ...flags, join(packageRoot, 'dist', 'cli', 'main.js'), ...d.args];
  // nsenter execs the command, so the pid is the daemon's own.
  const [cmd, args] = d.netnsPath ? [nsenter(), [`--net=${d.netnsPath}`, '--', ...argv]] : [argv[0]!, argv.slice(1)];
  const child = spawn(cmd, args, {
    detached: true,
    stdio: ['ignore', out, out],
    env: { ...(d.env ?? process.env), NODEMESH_LOG_LEVEL: process.env.NODEMESH_LOG_LEVEL ?? 'info' },
  });
  child.unref();
  const pid = child.pid!;
  writeFileSync(d.pidFile, `${pid}\n`);
  const deadline = Date.now() + 30_000;
  while (Date.now() < deadline) {
    if (!pidAlive(pid)) {
      rmSync(d.pidFile, { force: true });
      throw new AgentError('NM_ERR_AGENT_UNAVAILABLE', `the ${d.what} exited during start; last lines of ${d.logFile}:\n${tail(d.logFile)}`);
    }
    if (await d.ready()) return pid;
    await new Promise((r) => setTimeout(r, 200));
  }
  process.kill(pid, 'SIGTERM');
  throw new TimeoutError(`the ${d.what} did not become ready in 30 s; see ${d.logFile}:\n${tail(d.logFile)}`);
}

export async function stopPid(pid: number | undefined): Promise<boolean> {
  if (!pid) return false;
  process.kill(pid, 'SIGTERM');
  const deadline = Date.now() + 10_000;
  while (pidAlive(pid) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
  if (pidAlive(pid)) process.kill(pid, 'SIGKILL');
  return true;
}

