// Finds the network namespace of a pod that is already running, by its IP, as istio-cni's node
// agent does for pods that started before it: every process's /proc/<pid>/ns/net, deduplicated
// by namespace inode, and the one namespace that holds the pod IP on an interface. The path
// handed to enrollment is the runtime's bind mount of that namespace (/run/netns,
// /var/run/netns) when there is one, as it outlives any one process; else the process's own.
import { readFile, readdir, readlink, stat } from 'node:fs/promises';
import { statSync } from 'node:fs';
import { join } from 'node:path';
import { podCgroupNames } from './cgroups.js';

/** One pod to look for: its UID (to break a tie by cgroup) and its IPv4 address. */
export interface NetnsLookup {
  uid: string;
  ip: string;
}

export type NetnsFound = { netnsPath: string } | { error: string };

/** By pod UID: the netns path to enroll with, or why none was found. */
export type NetnsFinder = (pods: readonly NetnsLookup[]) => Promise<Map<string, NetnsFound>>;

export interface NetnsFinderOptions {
  /** The procfs to scan (default /proc: the agent needs the host PID namespace). */
  procRoot?: string;
  /** Where runtimes bind-mount pod namespaces (default /run/netns and /var/run/netns). */
  netnsDirs?: readonly string[];
}

/** The identity of the namespace at `path` (device and inode), or undefined when it is gone. */
export function netnsId(path: string): string | undefined {
  try {
    const st = statSync(path);
    return `${st.dev}:${st.ino}`;
  } catch {
    return undefined;
  }
}

/** Whether two paths name one namespace (a CNI_NETNS bind mount and a /proc/<pid>/ns/net of it). */
export function sameNetns(a: string, b: string): boolean {
  if (a === b) return true;
  const id = netnsId(a);
  return id !== undefined && id === netnsId(b);
}

/** The inode in a `net:[4026532281]` link, or undefined. */
async function nsInode(link: string): Promise<string | undefined> {
  try {
    return /^net:\[(\d+)\]$/.exec(await readlink(link))?.[1];
  } catch {
    return undefined;
  }
}

/** The local IPv4 addresses of a namespace, from its fib_trie (`|-- a.b.c.d` then `/32 host LOCAL`). */
export function localAddresses(fibTrie: string): Set<string> {
  const out = new Set<string>();
  let last: string | undefined;
  for (const line of fibTrie.split('\n')) {
    const leaf = /\|--\s+(\d+\.\d+\.\d+\.\d+)\s*$/.exec(line);
    if (leaf) last = leaf[1];
    else if (last && /\/32 host LOCAL/.test(line)) out.add(last);
  }
  return out;
}

/** Runs `fn` over `items`, `width` at a time (a node has thousands of processes: no fd storm). */
async function inBatches<T>(items: readonly T[], width: number, fn: (x: T) => Promise<void>): Promise<void> {
  for (let i = 0; i < items.length; i += width) await Promise.all(items.slice(i, i + width).map(fn));
}

interface Netns {
  inode: string;
  pids: number[];
  ips: Set<string>;
}

export function netnsFinder(o: NetnsFinderOptions = {}): NetnsFinder {
  const proc = o.procRoot ?? '/proc';
  const dirs = o.netnsDirs ?? ['/run/netns', '/var/run/netns'];
  return async (pods) => {
    const out = new Map<string, NetnsFound>();
    if (pods.length === 0) return out;
    // Never the agent's own namespace, nor the host's: a pod IP is never theirs, and enrolling
    // either would capture the node.
    const skip = new Set([await nsInode(join(proc, 'self', 'ns', 'net')), await nsInode(join(proc, '1', 'ns', 'net'))]);
    const byInode = new Map<string, Netns>();
    const pids = (await readdir(proc).catch(() => [] as string[])).filter((d) => /^\d+$/.test(d)).map(Number);
    await inBatches(pids, 64, async (pid) => {
      const inode = await nsInode(join(proc, String(pid), 'ns', 'net'));
      if (!inode || skip.has(inode)) return;
      const ns = byInode.get(inode) ?? { inode, pids: [], ips: new Set<string>() };
      ns.pids.push(pid);
      byInode.set(inode, ns);
    });
    // One read per namespace (any of its processes will do; the next one if it just exited).
    await inBatches([...byInode.values()], 32, async (ns) => {
      for (const pid of ns.pids) {
        const text = await readFile(join(proc, String(pid), 'net', 'fib_trie'), 'utf8').catch(() => undefined);
        if (text === undefined) continue;
        ns.ips = localAddresses(text);
        return;
      }
    });
    const nsfs = await stat(join(proc, 'self', 'ns', 'net')).then((st) => st.dev, () => undefined);
    const mounts = await bindMounts(dirs, nsfs);
    for (const p of pods) {
      let found = [...byInode.values()].filter((ns) => ns.ips.has(p.ip));
      if (found.length > 1) {
        const mine = await inPodCgroup(proc, found, p.uid);
        if (mine.length > 0) found = mine;
      }
      if (found.length === 0) {
        out.set(p.uid, { error: `no network namespace under ${proc} holds ${p.ip} (no running process of the pod is visible: the agent needs the host PID namespace)` });
      } else if (found.length > 1) {
        out.set(p.uid, { error: `${found.length} network namespaces hold ${p.ip} (inodes ${found.map((n) => n.inode).join(', ')}) and none is told apart by the pod's cgroup; not guessing` });
      } else {
        const ns = found[0]!;
        out.set(p.uid, { netnsPath: mounts.get(ns.inode) ?? join(proc, String(ns.pids[0]), 'ns', 'net') });
      }
    }
    return out;
  };
}

/** The bind mounts of namespaces (on the nsfs device, when known) under `dirs`, by inode (the first path of each). */
async function bindMounts(dirs: readonly string[], nsfs: number | undefined): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  for (const dir of dirs) {
    for (const name of await readdir(dir).catch(() => [] as string[])) {
      const path = join(dir, name);
      const st = await stat(path).catch(() => undefined);
      if (st && (nsfs === undefined || st.dev === nsfs) && !out.has(String(st.ino))) out.set(String(st.ino), path);
    }
  }
  return out;
}

/** Of several namespaces holding one IP, those with a process in the pod's cgroup (pod<uid>). */
async function inPodCgroup(proc: string, found: Netns[], uid: string): Promise<Netns[]> {
  const names = podCgroupNames(uid);
  const keep: Netns[] = [];
  for (const ns of found) {
    for (const pid of ns.pids) {
      const cg = await readFile(join(proc, String(pid), 'cgroup'), 'utf8').catch(() => '');
      if (cg.split('\n').some((l) => l.split('/').some((seg) => names.some((n) => seg === n || seg.endsWith(`-${n}`))))) {
        keep.push(ns);
        break;
      }
    }
  }
  return keep;
}
