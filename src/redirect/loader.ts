// Loading the redirection BPF object (bpffs, pinned maps, program checks) and tearing down a pin root.
import { existsSync, mkdirSync, readdirSync, rmSync, rmdirSync } from 'node:fs';
import { dirname, isAbsolute, join, relative, resolve, sep } from 'node:path';
import { NativeError } from '../errors.js';
import { log } from '../log.js';
import { DEFAULT_BPFFS, PORTS } from '../net/index.js';
import { EVENTS_CFG_SIZE } from './event-layout.js';
import { DEFAULT_ORIG_DST_POD_QUOTA, SIZES, u16, u32 } from './layout.js';
import { findBpffsMounts, findCgroup2Root } from './mounts.js';
import { native, nativeFailure, packageRoot, type NativeBinding, type NativeBpfObject } from './native.js';
import { POD_LINK_NAMES, type PodLinkName, type RedirectorOptions } from './types.js';
import { assertAbsolutePath, assertInteger, assertPort } from './validate.js';

const rlog = log.child({ component: 'redirect' });

const DEFAULT_OUTBOUND_PORT = PORTS.outbound;
const DEFAULT_HBONE_PORT = PORTS.hbone;

/** Each pinned link: the program it runs and what it attaches to. */
export const LINKS: ReadonlyArray<{ name: PodLinkName; prog: string; target: 'cgroup' | 'netns' }> = [
  { name: 'connect4', prog: 'nm_connect4', target: 'cgroup' },
  { name: 'connect6', prog: 'nm_connect6', target: 'cgroup' },
  { name: 'sockops', prog: 'nm_sockops', target: 'cgroup' },
  { name: 'getpeername4', prog: 'nm_getpeername4', target: 'cgroup' },
  { name: 'getpeername6', prog: 'nm_getpeername6', target: 'cgroup' },
  { name: 'sk_lookup', prog: 'nm_sk_lookup', target: 'netns' },
];

/**
 * The observer's links at a pod cgroup parent (`<pinRoot>/observe/<id>/<name>`): report the
 * pods below it that are not enrolled, never redirect them (src/redirect/observe.ts).
 */
export const OBSERVE_LINKS: ReadonlyArray<{ name: PodLinkName; prog: string }> = [
  { name: 'connect4', prog: 'nm_observe_connect4' },
  { name: 'connect6', prog: 'nm_observe_connect6' },
  { name: 'sockops', prog: 'nm_observe_sockops' },
];

/** The stream verdict of the kernel splice, attached to nm_splice at load (splice.ts). */
export const SPLICE_PROG = 'nm_splice_verdict';

/** The pinned maps and the size of key and value each must have (bpf/redirect.h). */
const MAPS = {
  podCfg: { name: 'nm_pod_cfg', keySize: 8, valueSize: SIZES.podCfg },
  cookieDst: { name: 'nm_cookie_dst', keySize: 8, valueSize: SIZES.addr4 },
  origDst: { name: 'nm_orig_dst', keySize: SIZES.origDstKey, valueSize: SIZES.addr4 },
  enrolled: { name: 'nm_enrolled', keySize: 4, valueSize: SIZES.enrolled },
  listeners: { name: 'nm_listeners', keySize: SIZES.listenerKey, valueSize: 8 },
  podOwner: { name: 'nm_pod_owner', keySize: SIZES.podOwnerKey, valueSize: SIZES.podOwner },
  podConns: { name: 'nm_pod_conns', keySize: 8, valueSize: SIZES.podConns },
  stats: { name: 'nm_stats', keySize: 4, valueSize: SIZES.stats },
  /** The kernel splice's maps (bpf/lib/splice.h); not pinned: they die with this process. */
  splice: { name: 'nm_splice', keySize: 8, valueSize: 8 },
  splicePeer: { name: 'nm_splice_peer', keySize: 8, valueSize: SIZES.splicePeer },
  spliceTaken: { name: 'nm_splice_taken', keySize: 8, valueSize: 8 },
  /** BPF_MAP_TYPE_RINGBUF: no key, no value; records are struct nm_event (event-layout.ts). */
  events: { name: 'nm_events', keySize: 0, valueSize: 0 },
  eventsCfg: { name: 'nm_events_cfg', keySize: 4, valueSize: EVENTS_CFG_SIZE },
  eventsLost: { name: 'nm_events_lost', keySize: 4, valueSize: 8 },
} as const;
export type MapRole = keyof typeof MAPS;

/** Fds of the pinned maps, by role. */
export type MapFds = Readonly<Record<MapRole, number>>;

/** A loaded program: its fd and the attach type it expects. */
export interface LoadedProgram {
  fd: number;
  attachType: number;
}

/** What `loadRedirect` hands the facade: the open object and where it pins. */
export interface LoadedRedirect {
  binding: NativeBinding;
  object: NativeBpfObject;
  progs: ReadonlyMap<string, LoadedProgram>;
  maps: MapFds;
  /** The bpffs directory this redirector pins under. */
  pinRoot: string;
  /** Mount point of the cgroup v2 hierarchy pod cgroups must live under. */
  cgroupRoot: string;
  outboundPort: number;
  hbonePort: number;
  /** Captured connections one pod may hold open at once (0: no quota). */
  origDstPodQuota: number;
  /** Entries of nm_orig_dst (and nm_cookie_dst): what all pods of the node share. */
  origDstCapacity: number;
}

function isRoot(): boolean {
  return typeof process.geteuid === 'function' && process.geteuid() === 0;
}

/** Whether path is root itself or inside it (lexically). */
export function isUnder(path: string, root: string): boolean {
  const rel = relative(root, path);
  return !isAbsolute(rel) && rel !== '..' && !rel.startsWith(`..${sep}`);
}

/** Nearest existing ancestor of path (path itself when it exists). */
function existingAncestor(path: string): string {
  let p = path;
  while (!existsSync(p) && dirname(p) !== p) p = dirname(p);
  return p;
}

/** Makes sure pinRoot is on a bpffs, mounting one at /sys/fs/bpf when the node has none. */
function ensureBpffs(binding: NativeBinding, pinRoot: string): void {
  try {
    if (binding.isBpffs(existingAncestor(pinRoot))) return;
  } catch (err) {
    throw nativeFailure('NM_ERR_NO_BPFFS', `checking whether ${pinRoot} is on a bpffs`, err);
  }
  const mounted = findBpffsMounts();
  if (isUnder(pinRoot, DEFAULT_BPFFS) && !mounted.includes(DEFAULT_BPFFS)) {
    try {
      binding.mountBpffs(DEFAULT_BPFFS);
      rlog.info({ path: DEFAULT_BPFFS }, 'mounted bpffs');
      return;
    } catch (err) {
      throw nativeFailure('NM_ERR_NO_BPFFS', `mounting bpffs at ${DEFAULT_BPFFS} failed; mount it by hand: mount -t bpf bpf ${DEFAULT_BPFFS}`, err);
    }
  }
  throw new NativeError('NM_ERR_NO_BPFFS', `pin root ${pinRoot} is not on a bpffs (bpffs mounts: ${mounted.join(', ') || 'none'}); ` +
      `choose a pin root under one, or mount one: mount -t bpf bpf ${DEFAULT_BPFFS}`,
  );
}

/** The programs and map fds of a loaded object, checked against what bpf/redirect.h declares. */
function checkObject(object: NativeBpfObject): { progs: Map<string, LoadedProgram>; maps: MapFds } {
  const progs = new Map(object.programs().map((p) => [p.name, { fd: p.fd, attachType: p.attachType }]));
  const byName = new Map(object.maps().map((m) => [m.name, m]));
  const fds = {} as Record<MapRole, number>;
  for (const [role, want] of Object.entries(MAPS) as Array<[MapRole, (typeof MAPS)[MapRole]]>) {
    const m = byName.get(want.name);
    if (!m || m.keySize !== want.keySize || m.valueSize !== want.valueSize) {
      throw new NativeError('NM_ERR_BPF_OBJECT', `map ${want.name} is ${m ? `${m.keySize}/${m.valueSize} bytes (key/value), expected ${want.keySize}/${want.valueSize}` : 'missing'}; ` +
          'bpf/redirect.h and src/redirect/layout.ts disagree, or the object is stale: run `make bpf`',
      );
    }
    fds[role] = m.fd;
  }
  for (const l of [...LINKS, ...OBSERVE_LINKS, { prog: SPLICE_PROG }]) {
    if (!progs.has(l.prog)) {
      throw new NativeError('NM_ERR_BPF_OBJECT', `program ${l.prog} is missing from the BPF object; run \`make bpf\``);
    }
  }
  return { progs, maps: fds };
}

/**
 * Loads the redirection programs, pinning (or reusing) their maps under `<pinRoot>/maps`.
 * Mounts bpffs at /sys/fs/bpf when the node has none. Needs root.
 */
export async function loadRedirect(options: RedirectorOptions): Promise<LoadedRedirect> {
  if (options === null || typeof options !== 'object') throw new TypeError('options must be an object');
  assertAbsolutePath(options.pinRoot, 'options.pinRoot');
  const pinRoot = resolve(options.pinRoot);
  const objectPath = options.objectPath ?? join(packageRoot(), 'bpf', 'build', 'redirect.bpf.o');
  assertAbsolutePath(objectPath, 'options.objectPath');
  const outboundPort = options.outboundPort ?? DEFAULT_OUTBOUND_PORT;
  assertPort(outboundPort, 'options.outboundPort');
  const hbonePort = options.hbonePort ?? DEFAULT_HBONE_PORT;
  assertPort(hbonePort, 'options.hbonePort');
  const origDstPodQuota = options.origDstPodQuota ?? DEFAULT_ORIG_DST_POD_QUOTA;
  assertInteger(origDstPodQuota, 'options.origDstPodQuota', 0, 2 ** 32 - 1);

  if (!isRoot()) {
    throw new NativeError('NM_ERR_NOT_ROOT', 'loading the eBPF redirection needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN, CAP_BPF); run the agent as root or privileged',
    );
  }
  const cgroupRoot = findCgroup2Root();
  const binding = native();
  ensureBpffs(binding, pinRoot);
  if (!existsSync(objectPath)) {
    throw new NativeError('NM_ERR_BPF_OBJECT', `BPF object ${objectPath} is missing; run \`make bpf\``);
  }
  try {
    mkdirSync(join(pinRoot, 'maps'), { recursive: true, mode: 0o700 });
    mkdirSync(join(pinRoot, 'pods'), { recursive: true, mode: 0o700 });
  } catch (err) {
    throw nativeFailure('NM_ERR_NO_BPFFS', `creating the pin directories under ${pinRoot}`, err);
  }

  let object: NativeBpfObject;
  try {
    object = await binding.loadObject(objectPath, join(pinRoot, 'maps'), {
      nm_outbound_port: u16(outboundPort),
      nm_hbone_port: u16(hbonePort),
      nm_orig_dst_pod_quota: u32(origDstPodQuota),
    });
  } catch (err) {
    throw nativeFailure(
      'NM_ERR_BPF_OBJECT',
      `loading ${objectPath} (maps pinned under ${join(pinRoot, 'maps')}; if an older agent pinned ` +
        `incompatible maps there, remove them with Redirector.destroyAll)`,
      err,
    );
  }
  try {
    const { progs, maps } = checkObject(object);
    const origDstCapacity = object.maps().find((m) => m.name === MAPS.origDst.name)!.maxEntries;
    rlog.info({ pinRoot, cgroupRoot, outboundPort, hbonePort, origDstPodQuota, origDstCapacity }, 'redirection programs loaded');
    return { binding, object, progs, maps, pinRoot, cgroupRoot, outboundPort, hbonePort, origDstPodQuota, origDstCapacity };
  } catch (err) {
    object.close();
    throw err;
  }
}

/** UIDs of the pod directories under `<pinRoot>/pods`, sorted. */
export function listPodDirs(pinRoot: string): string[] {
  const pods = join(pinRoot, 'pods');
  if (!existsSync(pods)) return [];
  return readdirSync(pods, { withFileTypes: true })
    .filter((d) => d.isDirectory())
    .map((d) => d.name)
    .sort();
}

/** Ids of the observer directories under `<pinRoot>/observe`, sorted. */
export function listObserveDirs(pinRoot: string): string[] {
  const dir = join(pinRoot, 'observe');
  if (!existsSync(dir)) return [];
  return readdirSync(dir, { withFileTypes: true })
    .filter((d) => d.isDirectory())
    .map((d) => d.name)
    .sort();
}

/** Detaches and unpins every link in a pod directory, then removes it; collects failures. */
export async function detachPodDir(binding: NativeBinding, dir: string, failures: unknown[]): Promise<void> {
  if (!existsSync(dir)) return;
  const known = new Set<string>(POD_LINK_NAMES);
  for (const name of readdirSync(dir)) {
    const pin = join(dir, name);
    try {
      if (known.has(name) && binding.linkInfo(pin)) await binding.linkDetach(pin);
      else rmSync(pin, { force: true });
    } catch (err) {
      failures.push(err);
    }
  }
  try {
    rmdirSync(dir);
  } catch (err) {
    failures.push(err);
  }
}

/**
 * Removes everything under pinRoot: detaches every pod's links, unpins the maps and
 * removes the pin root directory itself. For teardown and tests; needs root.
 */
export async function destroyPinRoot(pinRoot: string): Promise<void> {
  assertAbsolutePath(pinRoot, 'pinRoot');
  const root = resolve(pinRoot);
  if (!existsSync(root)) return;
  const binding = native();
  const failures: unknown[] = [];
  for (const uid of listPodDirs(root)) await detachPodDir(binding, join(root, 'pods', uid), failures);
  for (const id of listObserveDirs(root)) await detachPodDir(binding, join(root, 'observe', id), failures);
  try {
    rmSync(root, { recursive: true, force: true });
  } catch (err) {
    failures.push(err);
  }
  if (failures.length > 0) {
    throw nativeFailure('NM_ERR_NATIVE', `removing ${root} left ${failures.length} error(s); the first`, failures[0]);
  }
}
