// Pod processes: starting a container's command inside the pod's cgroup and netns, running
// one-off commands there (`sim exec`, tests, benchmarks), and waiting until a pod is ready.
import { spawn, type ChildProcess, type StdioOptions } from 'node:child_process';
import { closeSync, existsSync, openSync, readFileSync, readSync, statSync, writeSync } from 'node:fs';
import { constants } from 'node:os';
import { delimiter, join } from 'node:path';
import { NodemeshError, SimError, TimeoutError, UsageError } from '../errors.js';
import { netnsInode } from './host.js';

/** Where and how a process joins a pod. */
export interface PodSandbox {
  namespace: string;
  name: string;
  netnsPath: string;
  cgroup: string;
}

/**
 * Joins the cgroup first, then the netns, then execs the command: `ip netns exec` would
 * remount /sys for the new netns, after which the cgroup write fails. The cgroup write
 * happens in the shell itself (`$$`), so the command and all it forks stay in the pod.
 */
const ENTER_POD = 'cg=$1; ns=$2; nsenter=$3; shift 3; echo $$ > "$cg/cgroup.procs" && exec "$nsenter" --net="$ns" -- "$@"';

let nsenterPath: string | undefined;
export function nsenter(): string {
  if (nsenterPath) return nsenterPath;
  for (const dir of [...(process.env.PATH ?? '').split(delimiter), '/usr/bin', '/bin', '/usr/sbin', '/sbin']) {
    if (dir && existsSync(join(dir, 'nsenter'))) return (nsenterPath = join(dir, 'nsenter'));
  }
  throw new SimError('NM_ERR_SIM_POD', 'nsenter (util-linux) is not installed; the simulator needs it to start pod processes');
}

/** The environment a pod's process starts with: a minimal base, then the container's env. */
export function podEnv(pod: { name: string }, containerEnv: Record<string, string> = {}): NodeJS.ProcessEnv {
  const base: NodeJS.ProcessEnv = {
    PATH: process.env.PATH ?? '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
    HOME: process.env.HOME ?? '/root',
    HOSTNAME: pod.name,
  };
  for (const k of ['LANG', 'LC_ALL', 'TZ']) if (process.env[k] !== undefined) base[k] = process.env[k];
  return { ...base, ...containerEnv };
}

export interface SpawnInPodOptions {
  stdio?: StdioOptions;
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  /** New session (setsid), for processes that outlive the caller. */
  detached?: boolean;
}

/**
 * Starts `argv` in the pod's cgroup and netns and returns the ChildProcess (its pid is the
 * command's pid: the wrapper shell and nsenter both exec). For tests and benchmarks.
 */
export function spawnInPod(pod: PodSandbox, argv: string[], opts: SpawnInPodOptions = {}): ChildProcess {
  if (argv.length === 0) throw new UsageError('no command given to run in the pod');
  return spawn('/bin/sh', ['-c', ENTER_POD, 'nodemesh-pod', pod.cgroup, pod.netnsPath, nsenter(), ...argv], {
    stdio: opts.stdio ?? 'pipe',
    env: opts.env ?? podEnv(pod),
    cwd: opts.cwd ?? '/',
    detached: opts.detached ?? false,
  });
}

/** Exit status as a shell reports it: the code, or 128+n for a signal. */
export function exitStatus(code: number | null, signal: NodeJS.Signals | null): number {
  if (code !== null) return code;
  return 128 + (signal ? (constants.signals[signal] ?? 0) : 0);
}

/** Runs `argv` in the pod with the given stdio and resolves with its exit status. */
export function runInPod(pod: PodSandbox, argv: string[], opts: SpawnInPodOptions = {}): Promise<number> {
  return new Promise((resolve, reject) => {
    const child = spawnInPod(pod, argv, opts);
    // Pass termination requests on; SIGINT from a terminal already reaches the whole group.
    const forward = (sig: NodeJS.Signals) => () => child.kill(sig);
    const handlers: [NodeJS.Signals, () => void][] = [
      ['SIGTERM', forward('SIGTERM')],
      ['SIGHUP', forward('SIGHUP')],
      ['SIGINT', () => undefined],
    ];
    if (opts.stdio === 'inherit') for (const [s, h] of handlers) process.on(s, h);
    const done = () => {
      for (const [s, h] of handlers) process.off(s, h);
    };
    child.on('error', (e) => {
      done();
      reject(new SimError('NM_ERR_SIM_POD', `cannot start ${argv[0]} in pod ${pod.namespace}/${pod.name}: ${e.message}`, { cause: e }));
    });
    child.on('close', (code, signal) => {
      done();
      resolve(exitStatus(code, signal));
    });
  });
}

export interface StartedContainer {
  name: string;
  argv: string[];
  ports: number[];
  child: ChildProcess;
  /** Set once the process has exited. */
  exit?: { code: number | null; signal: NodeJS.Signals | null };
}

/**
 * Starts one container's process detached (it outlives the CLI), stdout and stderr
 * appended to the pod log.
 */
export function startContainer(
  pod: PodSandbox,
  c: { name: string; argv: string[]; env: Record<string, string>; cwd: string; ports: number[] },
  logPath: string,
): StartedContainer {
  if (!existsSync(c.cwd) || !statSync(c.cwd).isDirectory()) {
    throw new SimError('NM_ERR_SIM_POD', `working directory ${c.cwd} of container ${c.name} does not exist`, { where: `pod ${pod.namespace}/${pod.name}` });
  }
  const fd = openSync(logPath, 'a', 0o644);
  try {
    writeSync(fd, `--- nodemesh sim: ${new Date().toISOString()} starting container ${c.name}: ${JSON.stringify(c.argv)}\n`);
    const child = spawnInPod(pod, c.argv, { stdio: ['ignore', fd, fd], env: podEnv(pod, c.env), cwd: c.cwd, detached: true });
    const started: StartedContainer = { name: c.name, argv: c.argv, ports: c.ports, child };
    child.on('exit', (code, signal) => {
      started.exit = { code, signal };
    });
    child.on('error', () => {
      started.exit = { code: 127, signal: null };
    });
    child.unref();
    return started;
  } finally {
    closeSync(fd);
  }
}

/** The last lines of a pod log, for error messages. */
export function logTail(logPath: string, lines = 12): string {
  try {
    const fd = openSync(logPath, 'r');
    try {
      const size = statSync(logPath).size;
      const len = Math.min(size, 4096);
      const buf = Buffer.alloc(len);
      readSync(fd, buf, 0, len, size - len);
      return buf.toString('utf8').split('\n').filter((l) => l !== '').slice(-lines).join('\n');
    } finally {
      closeSync(fd);
    }
  } catch {
    return '';
  }
}

interface Listener {
  ip: string;
  port: number;
}

function hexToIPv4(hex: string): string {
  // /proc/net/tcp prints the address as a host-endian (little-endian here) 32-bit word.
  const n = parseInt(hex, 16);
  return [n & 255, (n >>> 8) & 255, (n >>> 16) & 255, n >>> 24].join('.');
}

function hexToIPv6(hex: string): string {
  const words: string[] = [];
  for (let i = 0; i < 32; i += 8) {
    const w = hex.slice(i, i + 8);
    words.push(w.slice(6, 8) + w.slice(4, 6), w.slice(2, 4) + w.slice(0, 2));
  }
  const s = words.map((w) => w.toLowerCase()).join(':');
  if (s === '0000:0000:0000:0000:0000:0000:0000:0000') return '::';
  const m = /^0000:0000:0000:0000:0000:ffff:([0-9a-f]{4}):([0-9a-f]{4})$/.exec(s);
  if (m) {
    const n = parseInt(m[1]! + m[2]!, 16);
    return `::ffff:${[n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.')}`;
  }
  return s;
}

/** TCP listeners of the netns a process is in, from /proc/<pid>/net/tcp{,6}. */
export function netnsListeners(pid: number): Listener[] {
  const out: Listener[] = [];
  for (const [file, v6] of [
    ['tcp', false],
    ['tcp6', true],
  ] as const) {
    let text: string;
    try {
      text = readFileSync(`/proc/${pid}/net/${file}`, 'utf8');
    } catch {
      continue;
    }
    for (const line of text.split('\n').slice(1)) {
      const f = line.trim().split(/\s+/);
      if (f.length < 4 || f[3] !== '0A') continue; // 0A = TCP_LISTEN
      const [addr, port] = f[1]!.split(':');
      out.push({ ip: v6 ? hexToIPv6(addr!) : hexToIPv4(addr!), port: parseInt(port!, 16) });
    }
  }
  return out;
}

/** Whether a listener accepts connections to the pod IP. */
function reachable(l: Listener, podIp: string): boolean {
  return l.ip === '0.0.0.0' || l.ip === '::' || l.ip === podIp || l.ip === `::ffff:${podIp}`;
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Connects to each port from inside the netns (not the cgroup: like a kubelet probe). */
const CONNECT_PROBE = `
const net = require('node:net');
const [ip, ...ports] = process.argv.slice(1);
let left = ports.length;
for (const p of ports) {
  const s = net.connect({ host: ip, port: Number(p), timeout: 3000 });
  s.on('connect', () => { s.destroy(); if (--left === 0) process.exit(0); });
  s.on('timeout', () => { console.log(p + ': timed out'); process.exit(1); });
  s.on('error', (e) => { console.log(p + ': ' + e.code); process.exit(1); });
}`;

async function connectProbe(netnsPath: string, ip: string, ports: number[]): Promise<string | undefined> {
  return new Promise((resolve) => {
    const child = spawn(nsenter(), [`--net=${netnsPath}`, '--', process.execPath, '-e', CONNECT_PROBE, ip, ...ports.map(String)], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout.on('data', (b: Buffer) => (out += b.toString()));
    child.stderr.on('data', (b: Buffer) => (out += b.toString()));
    child.on('error', (e) => resolve(e.message));
    child.on('close', (code) => resolve(code === 0 ? undefined : out.trim() || `probe exited ${code}`));
  });
}

/**
 * Waits until every container's process has entered the pod netns and, for containers that
 * declare ports, until those ports accept connections on the pod IP inside the netns.
 * Throws NM_ERR_SIM_POD (process died, with the log tail) or NM_ERR_TIMEOUT.
 */
export async function waitPodReady(pod: PodSandbox, ip: string, containers: StartedContainer[], logPath: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  const nsIno = netnsInode(pod.netnsPath);
  const where = `pod ${pod.namespace}/${pod.name}`;
  const died = (c: StartedContainer): NodemeshError =>
    new SimError('NM_ERR_SIM_POD', `container ${c.name} (${c.argv.join(' ')}) exited with status ${exitStatus(c.exit!.code, c.exit!.signal)} before the pod was ready; last lines of ${logPath}:\n${logTail(logPath) || '(empty)'}`,
      { where },
    );
  for (const c of containers) {
    const pid = c.child.pid;
    // 1. In the netns: nsenter has exec'd the command.
    for (;;) {
      if (c.exit) {
        if (c.exit.code === 0 && c.ports.length === 0) break; // ran to completion, like a Job
        throw died(c);
      }
      if (pid !== undefined && nsIno !== undefined && netnsInode(`/proc/${pid}/ns/net`) === nsIno) break;
      if (Date.now() >= deadline) throw new TimeoutError(`container ${c.name} did not start within ${timeoutMs} ms`, { where });
      await sleep(10);
    }
    if (c.ports.length === 0) {
      // No readiness signal to wait for; give an immediate crash (bad flag, missing file) a
      // moment to show, so it is reported here rather than found later.
      await sleep(150);
      if (c.exit && c.exit.code !== 0) throw died(c);
      continue;
    }
    // 2. Listening: cheap to poll, and names a loopback-only bind when that is the problem.
    let loopbackOnly: number[] = [];
    for (;;) {
      if (c.exit) throw died(c);
      const ls = pid === undefined ? [] : netnsListeners(pid);
      const missing = c.ports.filter((p) => !ls.some((l) => l.port === p && reachable(l, ip)));
      if (missing.length === 0) break;
      loopbackOnly = missing.filter((p) => ls.some((l) => l.port === p));
      if (Date.now() >= deadline) {
        const hint = loopbackOnly.length ? ` (port ${loopbackOnly.join(', ')} is bound to loopback only; bind 0.0.0.0 or the pod IP)` : '';
        throw new TimeoutError(`container ${c.name} did not listen on port ${missing.join(', ')} of ${ip} within ${timeoutMs} ms${hint}; last lines of ${logPath}:\n${logTail(logPath) || '(empty)'}`, { where });
      }
      await sleep(30);
    }
    // 3. Accepting: one real connection from inside the netns.
    const failure = await connectProbe(pod.netnsPath, ip, c.ports);
    if (failure) throw new SimError('NM_ERR_SIM_POD', `container ${c.name} listens but a connection from inside the pod failed: ${failure}`, { where });
  }
}
