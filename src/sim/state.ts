// The simulator's record of what it created (state.json, written atomically) and the lock
// that serialises `sim up`/`sim down` on one state dir.
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, unlinkSync, writeSync } from 'node:fs';
import { SimError } from '../errors.js';
import { writeFileAtomic } from '../files.js';
import type { SimPaths } from './paths.js';
import { pidAlive } from '../pids.js';

export const STATE_VERSION = 1;

/**
 * A node of the simulated cluster. In host mode there is one, the host itself (root netns,
 * bridge nm-br0). In multi-node mode each node is a netns of its own with its own pod bridge,
 * subnet, cgroup parent and CNI config dir, joined to the others by the cluster network.
 */
export interface SimNode {
  name: string;
  /** Bridge the CNI `bridge` plugin attaches this node's pods to (inside the node netns in multi-node mode). */
  bridge: string;
  subnet: string;
  /** The node's CNI config dir (its /etc/cni/net.d). */
  netDir: string;
  /** host-local's dataDir. */
  ipamDir: string;
  /** CNI_PATH, as a list. */
  cniPath: string[];
  /** The bridge did not exist before this simulator's first ADD: `sim down` may delete it (host mode). */
  bridgeCreated?: boolean;
  /** Multi-node mode only: the node's slot, which fixes its subnet, IP and cluster link. */
  index?: number;
  /** Multi-node mode only: the node's netns name (`nm-node.<name>`); absent for the host. */
  netns?: string;
  netnsPath?: string;
  /** Multi-node mode only: the node's address on the cluster network (10.240.0.<index+1>). */
  ip?: string;
  /** Multi-node mode only: the veth end in the cluster netns. */
  clusterLink?: string;
  /** Parent of the node's pod cgroups: `<root>/nodemesh-sim` (host) or `<root>/nodemesh-sim/<node>`. */
  cgroupParent?: string;
  /** Multi-node mode only: 'Creating' until its netns, links and routes exist. */
  phase?: 'Creating' | 'Ready';
}

export interface SimContainer {
  name: string;
  pid: number;
  /** command + args. */
  argv: string[];
  /** Declared TCP containerPorts (waited for at start). */
  ports: number[];
  env: Record<string, string>;
  cwd: string;
}

export type SimPodPhase = 'Creating' | 'Running';

export interface SimPod {
  namespace: string;
  name: string;
  uid: string;
  /** The node the pod reports (spec.nodeName, else the default node's name). */
  node: string;
  /** The SimNode whose network it is wired on. */
  hostNode: string;
  phase: SimPodPhase;
  /** Hash of what the simulator runs (containers, requested IP, node, uid); idempotence key. */
  specHash: string;
  ip: string | null;
  requestedIp?: string;
  /** The sandbox id passed as CNI_CONTAINERID and K8S_POD_INFRA_CONTAINER_ID. */
  containerId: string;
  ifName: string;
  netns: string;
  netnsPath: string;
  /** Absolute path of the pod's cgroup v2 directory. */
  cgroup: string;
  /** Where the pod's processes start: the config dir (or a container's workingDir). */
  workingDir: string;
  log: string;
  containers: SimContainer[];
  pids: number[];
  /** The chain's final ADD result; libcni passes it as prevResult to DEL and CHECK. */
  cniResult?: Record<string, unknown>;
  source: { file: string; line: number };
  createdAt: string;
}

export type SimMode = 'host' | 'nodes';

export interface SimState {
  version: number;
  createdAt: string;
  updatedAt: string;
  /** /proc/sys/net/ipv4/ip_forward before the first `sim up`; restored by `sim down`. */
  ipForwardBefore: string;
  cgroupRoot: string;
  /** `<cgroupRoot>/nodemesh-sim`. */
  cgroupParent: string;
  /** 'host' (absent in older state files): one node, the host. 'nodes': every node a netns. */
  mode?: SimMode;
  /** Multi-node mode: the cluster network's netns, recorded before it is created. */
  clusterNetns?: string;
  nodes: SimNode[];
  pods: SimPod[];
}

/** Reads state.json; undefined when there is none. Corrupt state is an error, not "none". */
export function readSimState(paths: SimPaths): SimState | undefined {
  let text: string;
  try {
    text = readFileSync(paths.stateFile, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new SimError('NM_ERR_SIM_STATE', `cannot read the simulator state: ${(e as Error).message}`, { where: paths.stateFile, cause: e });
  }
  let s: unknown;
  try {
    s = JSON.parse(text);
  } catch (e) {
    throw new SimError('NM_ERR_SIM_STATE', `the simulator state is not valid JSON (${(e as Error).message}); remove it and run \`nodemesh sim down\`, which then scans for the simulator's objects`, {
      where: paths.stateFile,
      cause: e,
    });
  }
  const st = s as Partial<SimState>;
  if (typeof st !== 'object' || st === null || st.version !== STATE_VERSION || !Array.isArray(st.pods) || !Array.isArray(st.nodes)) {
    throw new SimError('NM_ERR_SIM_STATE', `the simulator state has an unknown shape (want version ${STATE_VERSION} with nodes and pods)`, { where: paths.stateFile });
  }
  return st as SimState;
}

/** The mode of a state: state files written before multi-node mode are host mode. */
export function stateMode(state: SimState | undefined): SimMode | undefined {
  return state ? (state.mode ?? 'host') : undefined;
}

/** Writes state.json atomically: a temp file in the same dir, fsync, rename. */
export function writeSimState(paths: SimPaths, state: SimState): void {
  state.updatedAt = new Date().toISOString();
  writeFileAtomic(paths.stateFile, JSON.stringify(state, null, 2) + '\n');
}

export function removeSimState(paths: SimPaths): void {
  try {
    unlinkSync(paths.stateFile);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
  }
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/**
 * Takes `<simDir>/lock` (a file holding the owner's pid), waiting up to `waitMs` for a live
 * owner and taking over from a dead one. Returns the release function.
 */
export async function lockSim(paths: SimPaths, waitMs = 60_000): Promise<() => void> {
  mkdirSync(paths.simDir, { recursive: true });
  const deadline = Date.now() + waitMs;
  for (;;) {
    try {
      const fd = openSync(paths.lockFile, 'wx', 0o644);
      writeSync(fd, `${process.pid}\n`);
      closeSync(fd);
      let released = false;
      return () => {
        if (released) return;
        released = true;
        try {
          unlinkSync(paths.lockFile);
        } catch {
          /* someone removed it */
        }
      };
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    }
    let owner = NaN;
    try {
      owner = Number.parseInt(readFileSync(paths.lockFile, 'utf8'), 10);
    } catch {
      continue; // released between our open and read
    }
    if (!Number.isInteger(owner) || !pidAlive(owner)) {
      try {
        unlinkSync(paths.lockFile); // stale: its owner died
      } catch {
        /* raced with another taker */
      }
      continue;
    }
    if (Date.now() >= deadline) {
      throw new SimError('NM_ERR_SIM_STATE', `another simulator command (pid ${owner}) holds the lock; wait for it or stop it`, { where: paths.lockFile });
    }
    await sleep(100);
  }
}

export function stateExists(paths: SimPaths): boolean {
  return existsSync(paths.stateFile);
}
