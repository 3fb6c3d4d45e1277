// Pod cgroups on the cgroup v2 hierarchy: finding its mount, naming pod cgroups as the
// kubelet's cgroupfs driver does, killing everything in one, and removing them.
import { existsSync, mkdirSync, readFileSync, readdirSync, rmdirSync, writeFileSync } from 'node:fs';
import { join, relative, sep } from 'node:path';
import { ConfigError, TimeoutError } from '../errors.js';
import { SIM_CGROUP_PARENT } from './paths.js';

/** The cgroup v2 mount point (/sys/fs/cgroup, or /sys/fs/cgroup/unified on a hybrid host). */
export { findCgroup2Root } from '../redirect/index.js';

/** `<root>/nodemesh-sim`: the simulator's slice of the hierarchy. */
export function simCgroupParent(root: string): string {
  return join(root, SIM_CGROUP_PARENT);
}

/**
 * The parent of a node's pod cgroups: `<root>/nodemesh-sim` for the host node, and
 * `<root>/nodemesh-sim/<node>` for a node of multi-node mode (each node its own kubelet root).
 */
export function nodeCgroupParent(root: string, node?: string): string {
  return node === undefined ? simCgroupParent(root) : join(simCgroupParent(root), node);
}

/**
 * `<root>/nodemesh-sim[/<node>]/kubepods/besteffort/pod<uid>`, as the kubelet's cgroupfs
 * driver names it; `node` only in multi-node mode.
 */
export function podCgroupPath(root: string, uid: string, node?: string): string {
  if (!/^[A-Za-z0-9-]+$/.test(uid)) throw new ConfigError('NM_ERR_CONFIG_INVALID', `pod uid ${JSON.stringify(uid)} cannot name a cgroup (letters, digits and - only)`);
  return join(nodeCgroupParent(root, node), 'kubepods', 'besteffort', `pod${uid}`);
}

/** The pod cgroup as a path relative to the hierarchy root, e.g. /nodemesh-sim/kubepods/... */
export function cgroupRelativePath(root: string, cgroup: string): string {
  return '/' + relative(root, cgroup).split(sep).join('/');
}

export function createCgroup(path: string): void {
  mkdirSync(path, { recursive: true });
}

export function cgroupPids(path: string): number[] {
  try {
    return readFileSync(join(path, 'cgroup.procs'), 'utf8')
      .split('\n')
      .filter((l) => l !== '')
      .map(Number);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw e;
  }
}

/** All pids in a cgroup and its descendants. */
export function cgroupTreePids(path: string): number[] {
  if (!existsSync(path)) return [];
  const out = cgroupPids(path);
  for (const d of readdirSync(path, { withFileTypes: true })) if (d.isDirectory()) out.push(...cgroupTreePids(join(path, d.name)));
  return out;
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/**
 * Kills every process in a cgroup subtree and waits until it is empty. Uses cgroup.kill
 * (Linux 5.14+, which also catches processes forking while we kill); older kernels get
 * freeze + SIGKILL per pid.
 */
export async function killCgroup(path: string, timeoutMs = 10_000): Promise<void> {
  if (!existsSync(path)) return;
  const killFile = join(path, 'cgroup.kill');
  const deadline = Date.now() + timeoutMs;
  const useKillFile = existsSync(killFile);
  for (;;) {
    const pids = cgroupTreePids(path);
    if (pids.length === 0) return;
    if (useKillFile) {
      writeFileSync(killFile, '1');
    } else {
      for (const pid of pids) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          /* already gone */
        }
      }
    }
    if (Date.now() >= deadline) {
      throw new TimeoutError(`processes ${pids.join(', ')} are still in the cgroup ${timeoutMs} ms after SIGKILL`, { where: path });
    }
    await sleep(20);
  }
}

/**
 * Asks every process in the given cgroups to stop (SIGTERM), as the kubelet does before it
 * kills, and waits up to `graceMs` for them to exit. What is left is for killCgroup.
 */
export async function terminateCgroups(paths: string[], graceMs: number): Promise<void> {
  if (graceMs <= 0) return;
  const live = paths.filter((p) => existsSync(p));
  for (const p of live) {
    for (const pid of cgroupTreePids(p)) {
      try {
        process.kill(pid, 'SIGTERM');
      } catch {
        /* already gone */
      }
    }
  }
  const deadline = Date.now() + graceMs;
  while (Date.now() < deadline && live.some((p) => cgroupTreePids(p).length > 0)) await sleep(20);
}

/** rmdir a cgroup and its (process-free) descendants, deepest first. */
export function removeCgroupTree(path: string): void {
  if (!existsSync(path)) return;
  for (const d of readdirSync(path, { withFileTypes: true })) if (d.isDirectory()) removeCgroupTree(join(path, d.name));
  rmdirSync(path);
}

/**
 * Removes `from` and then each empty ancestor up to and including `upTo`. An ancestor still
 * holding other pods' cgroups is left.
 */
export function removeCgroupChain(from: string, upTo: string): void {
  removeCgroupTree(from);
  let dir = join(from, '..');
  while (dir.length >= upTo.length && dir.startsWith(upTo)) {
    try {
      rmdirSync(dir);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'ENOTEMPTY' || code === 'EBUSY' || code === 'EEXIST') return;
      if (code !== 'ENOENT') throw e;
    }
    if (dir === upTo) return;
    dir = join(dir, '..');
  }
}

/** rmdir each of `dirs` in order, leaving any that is not empty (another pod is in it). */
export function pruneEmptyCgroups(dirs: string[]): void {
  for (const d of dirs) {
    try {
      rmdirSync(d);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'ENOTEMPTY' || code === 'EBUSY' || code === 'EEXIST') return;
      if (code !== 'ENOENT') throw e;
    }
  }
}

/**
 * Pod cgroup dirs (pod<uid>) under the simulator's parent, the host node's
 * (`nodemesh-sim/kubepods/…`) and every node's (`nodemesh-sim/<node>/kubepods/…`): what a
 * stateless `sim down` and the "is another simulator running" check find.
 */
export function listPodCgroups(root: string): string[] {
  const parent = simCgroupParent(root);
  const out: string[] = [];
  if (!existsSync(parent)) return out;
  const walk = (d: string): void => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      if (!e.isDirectory()) continue;
      const p = join(d, e.name);
      if (e.name.startsWith('pod')) out.push(p);
      else walk(p);
    }
  };
  const kubepods = [join(parent, 'kubepods')];
  for (const e of readdirSync(parent, { withFileTypes: true })) if (e.isDirectory() && e.name !== 'kubepods') kubepods.push(join(parent, e.name, 'kubepods'));
  for (const k of kubepods) if (existsSync(k)) walk(k);
  return out;
}
