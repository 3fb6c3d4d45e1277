// Running things inside a simulated node: the node agent (`sim agent`, spawnAgentInNode) with
// the per-node flags it needs, and any other command (spawnInNode). A node of multi-node mode
// is entered with `nsenter --net` only, so the process keeps the host's mount namespace: /sys,
// bpffs, the cgroup tree and /run/netns look as they do on the host (`ip netns exec` would
// remount /sys and hide /sys/fs/bpf).
import { agentPaths } from '../net/index.js';
import { spawn, type ChildProcess, type StdioOptions } from 'node:child_process';
import { join } from 'node:path';
import { SimError, UsageError } from '../errors.js';
import { withAgentDefaults } from './nodes.js';
import { repoRoot, simPaths } from './paths.js';
import { exitStatus, nsenter } from './process.js';
import { getNode, requireRoot, type SimNodeInfo, type SimQueryOptions } from './query.js';

/** The environment variable carrying the simulator's state dir to a node's agent. */
export const SIM_STATE_DIR_ENV = 'NODEMESH_SIM_STATE_DIR';

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
}

/**
 * The agent command for a node. Adds, unless `args` already sets them:
 * - `--state-dir <stateDir>/sim/nodes/<node>` (host mode: `<stateDir>`), so each node's agent
 *   has its own `agent/` dir (CNI socket, enrolled pods, pid file);
 * - `--node <node>`;
 * - `--pin-root /sys/fs/bpf/nodemesh-<node>` (multi-node mode only: bpffs is shared by all
 *   nodes, so each agent needs its own pins);
 * and sets NODEMESH_SIM_STATE_DIR=<stateDir> in its environment, so the agent chains
 * nodemesh-cni into this node's conflist: installChainedPlugin(<that dir>, conf, <node>).
 */
export function nodeAgentCommand(node: string, args: string[], opts: NodeAgentOptions = {}): NodeAgentCommand {
  const info = getNode(node, opts);
  const argv = [
    opts.cli ?? join(repoRoot(), 'bin', 'nodemesh'),
    'agent',
    ...withAgentDefaults(args, { stateDir: info.agentStateDir, node: info.name, ...(info.pinRoot ? { pinRoot: info.pinRoot } : {}) }),
  ];
  const socket = agentPaths(info.agentStateDir).cniSocket;
  if (Buffer.byteLength(socket) > MAX_SOCKET_PATH) {
    throw new UsageError(`the agent's CNI socket ${socket} would be longer than the ${MAX_SOCKET_PATH} bytes a unix socket path may have; use a shorter --state-dir or node name`);
  }
  return { node: info, argv, netnsPath: info.netnsPath, env: { ...(opts.env ?? process.env), [SIM_STATE_DIR_ENV]: simPaths(opts.stateDir).stateDir } };
}

function spawnIn(netnsPath: string | null, argv: string[], env: NodeJS.ProcessEnv, opts: InNodeOptions): ChildProcess {
  const [cmd, args] = netnsPath ? [nsenter(), [`--net=${netnsPath}`, '--', ...argv]] : [argv[0]!, argv.slice(1)];
  return spawn(cmd, args, { stdio: opts.stdio ?? 'pipe', env, cwd: opts.cwd ?? '/', detached: opts.detached ?? false });
}

/**
 * Starts a node's agent (`nodemesh agent`) inside the node's netns, with the per-node flags of
 * nodeAgentCommand, and returns the ChildProcess (its pid is the agent's: nsenter and the
 * launcher both exec). In host mode the agent runs in the host netns.
 */
export function spawnAgentInNode(node: string, args: string[], opts: NodeAgentOptions = {}): ChildProcess {
  requireRoot('sim agent');
  const c = nodeAgentCommand(node, args, opts);
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
