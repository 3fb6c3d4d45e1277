// Runs CNI plugins exactly as a container runtime does: the CNI_* environment, the config on
// stdin, and for a conflist libcni's semantics (ADD in order passing prevResult, DEL in
// reverse with the cached result). The plugins are the real binaries on CNI_PATH.
import { spawn } from 'node:child_process';
import { constants } from 'node:os';
import { CniError, ConfigError, NodemeshError } from '../errors.js';
import { findPlugin } from './paths.js';
import { nsenter } from './process.js';
import { pluginInvocationConfig, type CniConfList } from './conflist.js';

/** What the runtime knows about the sandbox it is wiring. */
export interface CniRuntime {
  containerId: string;
  netnsPath: string;
  ifName: string;
  /** The CNI_ARGS string; see buildCniArgs. */
  args: string;
  /** CNI_PATH as a list of dirs. */
  cniPath: string[];
  /** Capability args (libcni's RuntimeConf.CapabilityArgs), e.g. { ips: ['10.244.0.9/24'] }. */
  capabilityArgs?: Record<string, unknown>;
  /**
   * The netns the runtime, and so every plugin, runs in: a multi-node node's. The `bridge`
   * plugin makes its bridge and host-side veth there and turns ip_forward on there. Default:
   * the caller's (host mode).
   */
  hostNetnsPath?: string;
  /** For messages: "namespace/name". */
  label?: string;
  timeoutMs?: number;
}

export interface PodIdentity {
  namespace: string;
  name: string;
  uid: string;
  containerId: string;
}

const ARG_VALUE = /^[A-Za-z0-9._:/-]+$/;

/**
 * CNI_ARGS as containerd's CRI plugin builds it. `IgnoreUnknown=1` comes first because the
 * reference plugins (bridge, host-local) reject keys they don't know unless it is set.
 */
export function buildCniArgs(pod: PodIdentity): string {
  const pairs: [string, string][] = [
    ['IgnoreUnknown', '1'],
    ['K8S_POD_NAMESPACE', pod.namespace],
    ['K8S_POD_NAME', pod.name],
    ['K8S_POD_INFRA_CONTAINER_ID', pod.containerId],
    ['K8S_POD_UID', pod.uid],
  ];
  for (const [k, v] of pairs) {
    // CNI_ARGS has no quoting: ';' and '=' are separators.
    if (!ARG_VALUE.test(v)) throw new ConfigError('NM_ERR_CONFIG_INVALID', `${k} value ${JSON.stringify(v)} cannot be passed in CNI_ARGS (allowed: letters, digits, . _ : / -)`);
  }
  return pairs.map(([k, v]) => `${k}=${v}`).join(';');
}

/** Parses `K=V;K=V` into a map (later keys win). */
export function parseCniArgs(args: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const part of args.split(';')) {
    if (part === '') continue;
    const i = part.indexOf('=');
    if (i <= 0) continue;
    out[part.slice(0, i)] = part.slice(i + 1);
  }
  return out;
}

export interface PluginRun {
  code: number;
  stdout: string;
  stderr: string;
}

/** The environment a runtime gives a plugin: its own, minus stale CNI_*, plus the request. */
export function pluginEnv(command: string, rt: CniRuntime): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('CNI_')) env[k] = v;
  env.CNI_COMMAND = command;
  env.CNI_CONTAINERID = rt.containerId;
  env.CNI_NETNS = rt.netnsPath;
  env.CNI_IFNAME = rt.ifName;
  env.CNI_ARGS = rt.args;
  env.CNI_PATH = rt.cniPath.join(':');
  return env;
}

/**
 * Runs one plugin binary, inside `hostNetnsPath` when given (nsenter --net: the mount
 * namespace stays, so CNI_NETNS paths under /run/netns and a relay plugin's unix socket
 * still resolve). Asynchronous, so an in-process agent can answer a chained plugin.
 */
export function execPlugin(binary: string, env: NodeJS.ProcessEnv, stdin: string, timeoutMs: number, hostNetnsPath?: string): Promise<PluginRun> {
  return new Promise((resolve, reject) => {
    const [cmd, args] = hostNetnsPath ? [nsenter(), [`--net=${hostNetnsPath}`, '--', binary]] : [binary, []];
    const child = spawn(cmd, args, { env, stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, timeoutMs);
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => err.push(b));
    child.stdin.on('error', () => {
      /* the plugin exited without reading stdin; its exit status says why */
    });
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      const stdout = Buffer.concat(out).toString('utf8');
      const stderr = Buffer.concat(err).toString('utf8');
      if (timedOut) {
        resolve({ code: -1, stdout, stderr: `${stderr}killed after ${timeoutMs} ms without finishing` });
        return;
      }
      resolve({ code: code ?? 128 + (signal ? osSignal(signal) : 0), stdout, stderr });
    });
    child.stdin.end(stdin);
  });
}

function osSignal(name: NodeJS.Signals): number {
  return constants.signals[name] ?? 0;
}

/** A CNI error object as plugins print it. */
export interface CniErrorObject {
  cniVersion?: string;
  code: number;
  msg: string;
  details?: string;
}

function parseCniError(stdout: string): CniErrorObject | undefined {
  try {
    const o = JSON.parse(stdout) as Partial<CniErrorObject>;
    if (typeof o === 'object' && o !== null && typeof o.code === 'number' && typeof o.msg === 'string') return o as CniErrorObject;
  } catch {
    /* not JSON */
  }
  return undefined;
}

function pluginFailure(type: string, command: string, rt: CniRuntime, run: PluginRun): NodemeshError {
  const cniError = parseCniError(run.stdout);
  const shown = cniError ? JSON.stringify(cniError) : run.stdout.trim() || '(no output)';
  const stderr = run.stderr.trim();
  return new CniError(`CNI plugin "${type}" ${command} failed${run.code >= 0 ? ` (exit ${run.code})` : ''}: ${shown}${stderr ? `\n  plugin stderr: ${stderr.split('\n').slice(-5).join('\n  ')}` : ''}`,
    { where: rt.label ? `pod ${rt.label}` : undefined, plugin: type, command, cniError, exitCode: run.code },
  );
}

async function runPlugin(
  list: CniConfList,
  index: number,
  command: 'ADD' | 'DEL' | 'CHECK',
  rt: CniRuntime,
  prevResult: Record<string, unknown> | undefined,
): Promise<Record<string, unknown> | undefined> {
  const type = list.plugins[index]!.type;
  const binary = findPlugin(type, rt.cniPath);
  if (!binary) {
    throw new CniError(`CNI plugin "${type}" not found in CNI_PATH ${rt.cniPath.join(':')}${type === 'nodemesh-cni' ? ' (build it: make cni)' : ''}`, {
      where: rt.label ? `pod ${rt.label}` : undefined,
      plugin: type,
      command,
    });
  }
  const conf = pluginInvocationConfig(list, index, prevResult, rt.capabilityArgs);
  const run = await execPlugin(binary, pluginEnv(command, rt), JSON.stringify(conf), rt.timeoutMs ?? 60_000, rt.hostNetnsPath);
  if (run.code !== 0) throw pluginFailure(type, command, rt, run);
  if (command !== 'ADD') return undefined;
  const text = run.stdout.trim();
  // A plugin that prints nothing on ADD passes the previous result on unchanged.
  if (text === '') return prevResult;
  try {
    const r = JSON.parse(text) as unknown;
    if (typeof r !== 'object' || r === null || Array.isArray(r)) throw new Error('not an object');
    return r as Record<string, unknown>;
  } catch (e) {
    throw new CniError(`CNI plugin "${type}" ADD printed a result that is not a JSON object: ${text.slice(0, 200)}`, {
      where: rt.label ? `pod ${rt.label}` : undefined,
      cause: e,
    });
  }
}

/** ADD through the whole list, in order; returns the final result. */
export async function cniAdd(list: CniConfList, rt: CniRuntime): Promise<Record<string, unknown>> {
  let prev: Record<string, unknown> | undefined;
  for (let i = 0; i < list.plugins.length; i++) prev = await runPlugin(list, i, 'ADD', rt, prev);
  return prev ?? { cniVersion: list.cniVersion };
}

/**
 * DEL through the list in reverse, each plugin given the cached ADD result as prevResult.
 * Unlike libcni it does not stop at the first failure: teardown goes on and the failures
 * are reported together at the end.
 */
export async function cniDel(list: CniConfList, rt: CniRuntime, cachedResult?: Record<string, unknown>): Promise<void> {
  const errors: NodemeshError[] = [];
  for (let i = list.plugins.length - 1; i >= 0; i--) {
    try {
      await runPlugin(list, i, 'DEL', rt, cachedResult);
    } catch (e) {
      errors.push(e as NodemeshError);
    }
  }
  if (errors.length === 1) throw errors[0]!;
  if (errors.length > 1) throw new CniError(errors.map((e) => e.message).join('\n'), { errors });
}

/** CHECK through the list in order, with the cached ADD result. */
export async function cniCheck(list: CniConfList, rt: CniRuntime, cachedResult: Record<string, unknown>): Promise<void> {
  for (let i = 0; i < list.plugins.length; i++) await runPlugin(list, i, 'CHECK', rt, cachedResult);
}

/** The IPv4 address a result gives the interface `ifName` in the sandbox (no prefix). */
export function resultIPv4(result: Record<string, unknown>, ifName: string): string | undefined {
  const ifaces = Array.isArray(result.interfaces) ? (result.interfaces as { name?: string; sandbox?: string }[]) : [];
  const ips = Array.isArray(result.ips) ? (result.ips as { address?: string; interface?: number }[]) : [];
  const v4 = ips.filter((e) => typeof e.address === 'string' && /^\d+\.\d+\.\d+\.\d+\//.test(e.address));
  const own = v4.find((e) => typeof e.interface === 'number' && ifaces[e.interface]?.name === ifName && ifaces[e.interface]?.sandbox);
  return (own ?? v4[0])?.address?.split('/')[0];
}
