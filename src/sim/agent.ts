// Running things inside a simulated node: the node agent (`sim agent`, spawnAgentInNode) with
// the per-node flags it needs, after the node's init container step (`nodemesh install-cni`),
// and any other command (spawnInNode). A node of multi-node mode is entered with
// `nsenter --net` only, so the process keeps the host's mount namespace: /sys, bpffs, the
// cgroup tree and /run/netns look as they do on the host (`ip netns exec` would remount /sys
// and hide /sys/fs/bpf).
import { agentPaths } from '../net/index.js';
import { spawn, spawnSync, type ChildProcess, type StdioOptions } from 'node:child_process';
import { join, resolve } from 'node:path';
import { CniError, SimError, UsageError } from '../errors.js';
import { installCniArgv, nodeCniDirs, type NodeCniDirs } from './node-cni.js';
import { findCgroup2Root, nodeCgroupParent } from './cgroup.js';
import { agentFlagValue, withAgentDefaults } from './nodes.js';
import { repoRoot } from './paths.js';
import { exitStatus, nsenter } from './process.js';
import { getNode, requireRoot, type SimNodeInfo, type SimQueryOptions } from './query.js';

/** Longest unix socket path Linux takes (sun_path is 108 bytes with its NUL). */
const MAX_SOCKET_PATH = 107;

export interface InNodeOptions extends SimQueryOptions {
  stdio?: StdioOptions;
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  /** New session (setsid), for a process that outlives the caller. */
  detached?: boolean;
}

export interface NodeAgentOptions extends InNodeOptions {
  /** The nodemesh launcher to run (default: this package's bin/nodemesh). */
  cli?: string;
}

/** What `sim agent` runs: the full argv, the netns it enters (null: the host) and the environment. */
export interface NodeAgentCommand {
  node: SimNodeInfo;
  /** `[<cli>, 'agent', ...defaults, ...args]`, before any nsenter. */
  argv: string[];
  netnsPath: string | null;
  env: NodeJS.ProcessEnv;
  /**
   * The node's init container step, run before the agent: where nodemesh-cni goes and the
   * agent socket it relays to, and the `nodemesh install-cni` argv that puts it there. Null
   * when the agent args say --no-install-cni (or only ask for --help).
   */
  installCni: (NodeCniDirs & { agentSocket: string; argv: string[] }) | null;
}

/**
 * The agent command for a node. Adds, unless `args` already sets them:
 * - `--state-dir <stateDir>/sim/nodes/<node>` (host mode: `<stateDir>`), so each node's agent
 *   has its own `agent/` dir (CNI socket, enrolled pods, pid file);
 * - `--node <node>`;
 * - `--pin-root /sys/fs/bpf/nodemesh-<node>` (multi-node mode only: bpffs is shared by all
 *   nodes, so each agent needs its own pins).
 * Its `installCni` chains nodemesh-cni into this node's conflist with the socket of the agent's
 * state dir (writing the simulator's conflist first if the node's config dir has none).
 */
export function nodeAgentCommand(node: string, args: string[], opts: NodeAgentOptions = {}): NodeAgentCommand {
  const info = getNode(node, opts);
  const cli = opts.cli ?? join(repoRoot(), 'bin', 'nodemesh');
  const observeCgroup = nodePodsCgroup(info);
  const agentArgs = withAgentDefaults(args, { stateDir: info.agentStateDir, node: info.name, ...(observeCgroup ? { observeCgroup } : {}), ...(info.pinRoot ? { pinRoot: info.pinRoot } : {}) });
  // The agent resolves a relative --state-dir from its cwd, which spawnIn makes / by default.
  const socket = agentPaths(resolve(opts.cwd ?? '/', agentFlagValue(agentArgs, '--state-dir')!)).cniSocket;
  if (Buffer.byteLength(socket) > MAX_SOCKET_PATH) {
    throw new UsageError(`the agent's CNI socket ${socket} would be longer than the ${MAX_SOCKET_PATH} bytes a unix socket path may have; use a shorter --state-dir or node name`);
  }
  const skip = ['--no-install-cni', '--help', '-h'].some((f) => agentFlagValue(args, f) !== undefined);
  const dirs = skip ? undefined : nodeCniDirs(opts.stateDir, info.netnsPath ? info.name : undefined);
  return {
    node: info,
    argv: [cli, 'agent', ...agentArgs],
    netnsPath: info.netnsPath,
    env: opts.env ?? process.env,
    installCni: dirs ? { ...dirs, agentSocket: socket, argv: installCniArgv(cli, dirs, socket) } : null,
  };
}

/** Where the simulator's kubelet puts this node's pods (`…/kubepods`), for the agent to observe; none without cgroup v2. */
export function nodePodsCgroup(info: Pick<SimNodeInfo, 'name' | 'netnsPath'>): string | undefined {
  try {
    return join(nodeCgroupParent(findCgroup2Root(), info.netnsPath ? info.name : undefined), 'kubepods');
  } catch {
    return undefined;
  }
}

function spawnIn(netnsPath: string | null, argv: string[], env: NodeJS.ProcessEnv, opts: InNodeOptions): ChildProcess {
  const [cmd, args] = netnsPath ? [nsenter(), [`--net=${netnsPath}`, '--', ...argv]] : [argv[0]!, argv.slice(1)];
  return spawn(cmd, args, { stdio: opts.stdio ?? 'pipe', env, cwd: opts.cwd ?? '/', detached: opts.detached ?? false });
}

/** Runs the node's init container step (`nodemesh install-cni`) in the node, to completion. */
function runInstallCni(c: NodeAgentCommand): void {
  if (!c.installCni) return;
  const argv = c.installCni.argv;
  const [cmd, args] = c.netnsPath ? [nsenter(), [`--net=${c.netnsPath}`, '--', ...argv]] : [argv[0]!, argv.slice(1)];
  const r = spawnSync(cmd, args, { env: c.env, cwd: '/', encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  if (r.error || r.status !== 0) {
    const why = r.error ? r.error.message : `exit ${exitStatus(r.status, r.signal)}: ${r.stderr.trim()}`;
    throw new CniError(`installing nodemesh-cni into node ${c.node.name} (${c.installCni.confDir}) failed, so its agent was not started: ${why}`);
  }
}

/**
 * Starts a node's agent (`nodemesh agent`) inside the node's netns, with the per-node flags of
 * nodeAgentCommand, and returns the ChildProcess (its pid is the agent's: nsenter and the
 * launcher both exec). First, as a node's init container would, it runs `nodemesh install-cni`
 * for the node and waits for it. In host mode both run in the host netns.
 */
export function spawnAgentInNode(node: string, args: string[], opts: NodeAgentOptions = {}): ChildProcess {
  requireRoot('sim agent');
  const c = nodeAgentCommand(node, args, opts);
  runInstallCni(c);
  return spawnIn(c.netnsPath, c.argv, c.env, opts);
}

/** Starts any command inside a node's netns (in host mode: on the host), e.g. curl to the agent's :15021. */
export function spawnInNode(node: string, argv: string[], opts: InNodeOptions = {}): ChildProcess {
  requireRoot('running a command in a node');
  if (argv.length === 0) throw new UsageError('no command given to run in the node');
  const info = getNode(node, opts);
  return spawnIn(info.netnsPath, argv, opts.env ?? process.env, opts);
}

/**
 * `sim agent`: runs the node's agent in the foreground, stdio inherited, SIGTERM and SIGHUP
 * passed on (SIGINT from a terminal reaches the agent through the process group already), and
 * resolves with its exit status (128+n for signal n).
 */
export function runAgentInNode(node: string, args: string[], opts: NodeAgentOptions = {}): Promise<number> {
  return new Promise((resolve, reject) => {
    const child = spawnAgentInNode(node, args, { ...opts, stdio: opts.stdio ?? 'inherit' });
    const forward = (sig: NodeJS.Signals) => () => child.kill(sig);
    const handlers: [NodeJS.Signals, () => void][] = [
      ['SIGTERM', forward('SIGTERM')],
      ['SIGHUP', forward('SIGHUP')],
      ['SIGINT', () => undefined],
    ];
    for (const [s, h] of handlers) process.on(s, h);
    const done = () => {
      for (const [s, h] of handlers) process.off(s, h);
    };
    child.on('error', (e) => {
      done();
      reject(new SimError('NM_ERR_SIM_NODE', `cannot start the agent in node ${node}: ${e.message}`, { cause: e }));
    });
    child.on('close', (code, signal) => {
      done();
      resolve(exitStatus(code, signal));
    });
  });
}
