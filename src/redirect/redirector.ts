// Per-pod attach and detach of the redirection programs, over pinned maps and links that
// outlive the agent (so a restarted agent adopts enrolled pods instead of re-capturing them).
import { existsSync, mkdirSync, readdirSync, rmSync, rmdirSync, statSync } from 'node:fs';
import { dirname, isAbsolute, join, relative, resolve, sep } from 'node:path';
import { AgentError, NativeError } from '../errors.js';
import { log } from '../log.js';
import {
  BPF_ANY,
  NM_ENROLLED_F_FAIL_OPEN,
  NM_LISTENER_HBONE,
  NM_LISTENER_PLAINTEXT,
  SIZES,
  decodeEnrolled,
  decodePodCfg,
  encodeEnrolled,
  encodeListenerKey,
  encodePodCfg,
  ipv4Key,
  u16,
  u64,
} from './layout.js';
import { findBpffsMounts, findCgroup2Root } from './mounts.js';
import { native, nativeFailure, packageRoot, type NativeBinding, type NativeBpfObject } from './native.js';
import { netnsCookieOfPath } from './netns.js';
import { POD_LINK_NAMES, type InboundKind, type PodAttachment, type PodLinkName, type PodRedirectSpec, type RedirectorOptions, type SocketAddress } from './types.js';
import { assertAbsolutePath, assertFd, assertIPv4, assertInboundKind, assertPort, assertUid, checkPodSpec } from './validate.js';

import { DEFAULT_BPFFS, PORTS } from '../net/index.js';

const rlog = log.child({ component: 'redirect' });

/** Where bpffs is mounted when the node has none. */
const DEFAULT_OUTBOUND_PORT = PORTS.outbound;
const DEFAULT_HBONE_PORT = PORTS.hbone;

/** Each pinned link: the program it runs and what it attaches to. */
const LINKS: ReadonlyArray<{ name: PodLinkName; prog: string; target: 'cgroup' | 'netns' }> = [
  { name: 'connect4', prog: 'nm_connect4', target: 'cgroup' },
  { name: 'connect6', prog: 'nm_connect6', target: 'cgroup' },
  { name: 'sockops', prog: 'nm_sockops', target: 'cgroup' },
  { name: 'getpeername4', prog: 'nm_getpeername4', target: 'cgroup' },
  { name: 'getpeername6', prog: 'nm_getpeername6', target: 'cgroup' },
  { name: 'sk_lookup', prog: 'nm_sk_lookup', target: 'netns' },
];

/** The pinned maps and the size of key and value each must have (bpf/redirect.h). */
const MAPS = {
  podCfg: { name: 'nm_pod_cfg', keySize: 8, valueSize: SIZES.podCfg },
  cookieDst: { name: 'nm_cookie_dst', keySize: 8, valueSize: SIZES.addr4 },
  origDst: { name: 'nm_orig_dst', keySize: SIZES.origDstKey, valueSize: SIZES.addr4 },
  enrolled: { name: 'nm_enrolled', keySize: 4, valueSize: SIZES.enrolled },
  listeners: { name: 'nm_listeners', keySize: SIZES.listenerKey, valueSize: 8 },
} as const;
type MapRole = keyof typeof MAPS;

const LISTENER_KIND: Record<InboundKind, number> = { plaintext: NM_LISTENER_PLAINTEXT, hbone: NM_LISTENER_HBONE };

/** Test-only access to the loaded object (program and map fds); not exported by index.ts. */
export const kTestHooks = Symbol('nodemesh.redirect.testHooks');
export interface RedirectorTestHooks {
  binding: NativeBinding;
  progFd(name: string): number;
  mapFd(name: string): number;
}

function isRoot(): boolean {
  return typeof process.geteuid === 'function' && process.geteuid() === 0;
}

function isUnder(path: string, root: string): boolean {
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

interface KnownPod {
  ip: string;
  netnsCookie: bigint;
}

export class Redirector {
  /** The bpffs directory this redirector pins under. */
  readonly pinRoot: string;
  /** Mount point of the cgroup v2 hierarchy pod cgroups must live under. */
  readonly cgroupRoot: string;
  readonly outboundPort: number;
  readonly hbonePort: number;

  #binding: NativeBinding;
  #object: NativeBpfObject;
  #progs: Map<string, { fd: number; attachType: number }>;
  #maps: Record<MapRole, number>;
  #pods = new Map<string, KnownPod>();
  #closed = false;

  private constructor(
    binding: NativeBinding,
    object: NativeBpfObject,
    opts: { pinRoot: string; cgroupRoot: string; outboundPort: number; hbonePort: number },
  ) {
    this.#binding = binding;
    this.#object = object;
    this.pinRoot = opts.pinRoot;
    this.cgroupRoot = opts.cgroupRoot;
    this.outboundPort = opts.outboundPort;
    this.hbonePort = opts.hbonePort;
    this.#progs = new Map(object.programs().map((p) => [p.name, { fd: p.fd, attachType: p.attachType }]));
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
    this.#maps = fds;
    for (const l of LINKS) {
      if (!this.#progs.has(l.prog)) {
        throw new NativeError('NM_ERR_BPF_OBJECT', `program ${l.prog} is missing from the BPF object; run \`make bpf\``);
      }
    }
  }

  /**
   * Loads the redirection programs, pinning (or reusing) their maps under `<pinRoot>/maps`.
   * Mounts bpffs at /sys/fs/bpf when the node has none. Needs root.
   */
  static async open(options: RedirectorOptions): Promise<Redirector> {
    if (options === null || typeof options !== 'object') throw new TypeError('options must be an object');
    assertAbsolutePath(options.pinRoot, 'options.pinRoot');
    const pinRoot = resolve(options.pinRoot);
    const objectPath = options.objectPath ?? join(packageRoot(), 'bpf', 'build', 'redirect.bpf.o');
    assertAbsolutePath(objectPath, 'options.objectPath');
    const outboundPort = options.outboundPort ?? DEFAULT_OUTBOUND_PORT;
    assertPort(outboundPort, 'options.outboundPort');
    const hbonePort = options.hbonePort ?? DEFAULT_HBONE_PORT;
    assertPort(hbonePort, 'options.hbonePort');

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
      const r = new Redirector(binding, object, { pinRoot, cgroupRoot, outboundPort, hbonePort });
      rlog.info({ pinRoot, cgroupRoot, outboundPort, hbonePort }, 'redirection programs loaded');
      return r;
    } catch (err) {
      object.close();
      throw err;
    }
  }

  /** The directory holding one pod's link pins. */
  podDir(uid: string): string {
    return join(this.pinRoot, 'pods', uid);
  }

  /**
   * Captures one pod: attaches connect4/6, sockops and getpeername4/6 to its cgroup and
   * sk_lookup to its netns (links pinned under `<pinRoot>/pods/<uid>/`), and writes its
   * nm_pod_cfg and nm_enrolled entries. Idempotent. Links already pinned for the same
   * cgroup/netns (an agent restart) are updated to the programs loaded now, not attached
   * twice. On failure, what this call attached or wrote is undone.
   *
   * Once enrolled, inbound SYNs to the pod IP are dropped until registerInboundListener
   * supplies the agent's listeners (fail closed).
   */
  async attachPod(spec: PodRedirectSpec): Promise<void> {
    this.#assertOpen();
    const s = checkPodSpec(spec);
    const where = `pod ${s.uid}`;
    const b = this.#binding;

    let cgroupIno: bigint;
    let netnsIno: bigint;
    try {
      const st = statSync(s.cgroupPath, { bigint: true });
      if (!st.isDirectory()) throw new Error('not a directory');
      cgroupIno = st.ino;
    } catch (err) {
      throw new AgentError('NM_ERR_ENROLL', `cgroupPath ${s.cgroupPath} is not a cgroup directory: ${(err as Error).message}`, { where, cause: err });
    }
    if (!isUnder(s.cgroupPath, this.cgroupRoot)) {
      throw new AgentError('NM_ERR_ENROLL', `cgroupPath ${s.cgroupPath} is not under the cgroup v2 root ${this.cgroupRoot}`, { where });
    }
    try {
      netnsIno = statSync(s.netnsPath, { bigint: true }).ino;
    } catch (err) {
      throw new AgentError('NM_ERR_ENROLL', `netnsPath ${s.netnsPath} does not exist`, { where, cause: err });
    }
    let cookie: bigint;
    try {
      cookie = await netnsCookieOfPath(s.netnsPath);
    } catch (err) {
      throw new AgentError('NM_ERR_ENROLL', `netnsPath ${s.netnsPath} is not a usable network namespace`, { where, cause: err });
    }

    const dir = this.podDir(s.uid);
    const createdDir = !existsSync(dir);
    const undo: Array<() => Promise<void> | void> = [];
    let step = 'creating the pin directory';
    try {
      mkdirSync(dir, { recursive: true, mode: 0o700 });
      for (const l of LINKS) {
        const prog = this.#progs.get(l.prog)!;
        const pin = join(dir, l.name);
        const target = l.target === 'cgroup' ? s.cgroupPath : s.netnsPath;
        step = `attaching ${l.name} to ${target}`;
        const info = b.linkInfo(pin);
        if (info) {
          const sameTarget = l.target === 'cgroup' ? info.cgroupId === cgroupIno : BigInt(info.netnsIno) === netnsIno;
          if (sameTarget && info.attachType === prog.attachType) {
            step = `updating the pinned ${l.name} link to the loaded program`;
            await b.linkUpdate(pin, prog.fd);
            continue;
          }
          // Pinned for a cgroup or netns that is gone or replaced: start over.
          step = `detaching the stale pinned ${l.name} link`;
          await b.linkDetach(pin);
        }
        step = `attaching ${l.name} to ${target}`;
        await b.linkCreate(prog.fd, target, prog.attachType, pin);
        undo.push(() => b.linkDetach(pin));
      }

      step = 'writing nm_pod_cfg';
      const cfgKey = u64(cookie);
      const prevCfg = b.mapLookup(this.#maps.podCfg, cfgKey);
      b.mapUpdate(
        this.#maps.podCfg,
        cfgKey,
        encodePodCfg({ podIp: s.ip, excludePorts: s.excludeOutboundPorts, excludeCidrs: s.excludeOutboundCidrs }),
        BPF_ANY,
      );
      undo.push(() => this.#restore(this.#maps.podCfg, cfgKey, prevCfg));

      step = 'writing nm_enrolled';
      const enrKey = ipv4Key(s.ip);
      const prevEnr = b.mapLookup(this.#maps.enrolled, enrKey);
      b.mapUpdate(
        this.#maps.enrolled,
        enrKey,
        encodeEnrolled({
          flags: s.inboundFailOpen ? NM_ENROLLED_F_FAIL_OPEN : 0,
          excludePorts: s.excludeInboundPorts,
          netnsCookie: cookie,
        }),
        BPF_ANY,
      );
      undo.push(() => this.#restore(this.#maps.enrolled, enrKey, prevEnr));
    } catch (err) {
      for (const u of undo.reverse()) {
        try {
          await u();
        } catch (undoErr) {
          rlog.warn({ err: undoErr, uid: s.uid }, 'undoing a half-done pod attach failed');
        }
      }
      if (createdDir) rmSync(dir, { recursive: true, force: true });
      throw nativeFailure('NM_ERR_ENROLL', `attaching the redirection failed while ${step}`, err, where);
    }

    // Same UID, new IP or netns (a re-enrollment): drop the entries of the old one.
    const previous = this.#pods.get(s.uid);
    if (previous && previous.ip !== s.ip) this.#deletePodEntries(previous.ip, previous.netnsCookie);
    else if (previous && previous.netnsCookie !== cookie) b.mapDelete(this.#maps.podCfg, u64(previous.netnsCookie));
    this.#pods.set(s.uid, { ip: s.ip, netnsCookie: cookie });
    rlog.info({ uid: s.uid, ip: s.ip, cgroup: s.cgroupPath, netns: s.netnsPath }, 'pod redirection attached');
  }

  /** The links pinned for a pod (what attachPod left, or a previous agent did); null if none. */
  podAttachment(uid: string): PodAttachment | null {
    assertUid(uid);
    const dir = this.podDir(uid);
    if (!existsSync(dir)) return null;
    const names = new Set(readdirSync(dir));
    return { uid, links: POD_LINK_NAMES.filter((n) => names.has(n)) };
  }

  /**
   * Releases one pod: detaches and unpins its links, removes its pin directory and deletes
   * its map entries (nm_enrolled, nm_pod_cfg, nm_listeners). Pass `ip` when this process did
   * not attach the pod itself (after a restart); without it only the links are removed.
   */
  async detachPod(uid: string, ip?: string): Promise<void> {
    this.#assertOpen();
    assertUid(uid);
    if (ip !== undefined) assertIPv4(ip, 'ip');
    const known = this.#pods.get(uid);
    const podIp = ip ?? known?.ip;
    const failures: unknown[] = [];

    await detachPodDir(this.#binding, this.podDir(uid), failures);
    try {
      if (podIp !== undefined) this.#deletePodEntries(podIp, known?.netnsCookie);
      else if (known) this.#binding.mapDelete(this.#maps.podCfg, u64(known.netnsCookie));
    } catch (err) {
      failures.push(err);
    }
    this.#pods.delete(uid);
    if (failures.length > 0) {
      throw nativeFailure('NM_ERR_NATIVE', `detaching the redirection left ${failures.length} error(s); the first`, failures[0], `pod ${uid}`);
    }
    rlog.info({ uid, ip: podIp }, 'pod redirection detached');
  }

  /** UIDs of pods that have pinned links: the pods a restarted agent must adopt. */
  listPinnedPods(): string[] {
    return listPodDirs(this.pinRoot);
  }

  /**
   * Puts the agent's listener for a pod into nm_listeners, so sk_lookup steers the pod's
   * inbound SYNs to it. The socket must be a listening TCP socket created inside the pod's
   * netns (a listener from another netns would be a silent black hole).
   */
  registerInboundListener(podIp: string, kind: InboundKind, fd: number): void {
    this.#assertOpen();
    assertIPv4(podIp, 'podIp');
    assertInboundKind(kind);
    assertFd(fd);
    // Catch the black hole early: an enrolled pod records its netns cookie.
    const enrolled = this.#binding.mapLookup(this.#maps.enrolled, ipv4Key(podIp));
    if (enrolled) {
      const want = decodeEnrolled(enrolled).netnsCookie;
      let got: bigint;
      try {
        got = this.#binding.netnsCookie(fd);
      } catch (err) {
        throw nativeFailure('NM_ERR_NATIVE', `reading the netns of listener fd ${fd}`, err, `pod ${podIp}`);
      }
      if (got !== want) {
        throw new AgentError('NM_ERR_ENROLL', `the ${kind} listener (fd ${fd}) lives in another network namespace than the pod; ` +
            'create it inside the pod netns with listenInNetns(), or its SYNs would vanish',
          { where: `pod ${podIp}` },
        );
      }
    }
    try {
      this.#binding.sockmapUpdate(this.#maps.listeners, encodeListenerKey(podIp, LISTENER_KIND[kind]), fd, BPF_ANY);
    } catch (err) {
      throw nativeFailure('NM_ERR_NATIVE', `registering the ${kind} listener (fd ${fd}; it must be a listening TCP socket)`, err, `pod ${podIp}`);
    }
  }

  /** Removes a pod's listener from nm_listeners; false when none was registered. */
  unregisterInboundListener(podIp: string, kind: InboundKind): boolean {
    this.#assertOpen();
    assertIPv4(podIp, 'podIp');
    assertInboundKind(kind);
    try {
      return this.#binding.mapDelete(this.#maps.listeners, encodeListenerKey(podIp, LISTENER_KIND[kind]));
    } catch (err) {
      throw nativeFailure('NM_ERR_NATIVE', `unregistering the ${kind} listener`, err, `pod ${podIp}`);
    }
  }

  /**
   * The destination a captured connection was originally headed to, for a socket accepted
   * on the outbound listener; null when the connection was not captured (or already closed).
   */
  originalDst(fd: number): SocketAddress | null {
    this.#assertOpen();
    assertFd(fd);
    try {
      return this.#binding.originalDst(this.#maps.origDst, fd);
    } catch (err) {
      throw nativeFailure('NM_ERR_ORIGINAL_DST', `looking up the original destination of fd ${fd}`, err);
    }
  }

  /** Closes the program and map fds. Pins (maps and links) stay, so capture continues. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#object.close();
  }

  get closed(): boolean {
    return this.#closed;
  }

  /**
   * Removes everything under pinRoot: detaches every pod's links, unpins the maps and
   * removes the pin root directory itself. For teardown and tests; needs root.
   */
  static async destroyAll(pinRoot: string): Promise<void> {
    assertAbsolutePath(pinRoot, 'pinRoot');
    const root = resolve(pinRoot);
    if (!existsSync(root)) return;
    const binding = native();
    const failures: unknown[] = [];
    for (const uid of listPodDirs(root)) await detachPodDir(binding, join(root, 'pods', uid), failures);
    try {
      rmSync(root, { recursive: true, force: true });
    } catch (err) {
      failures.push(err);
    }
    if (failures.length > 0) {
      throw nativeFailure('NM_ERR_NATIVE', `removing ${root} left ${failures.length} error(s); the first`, failures[0]);
    }
  }

  /** Test-only: the binding and the fds of the loaded object. */
  [kTestHooks](): RedirectorTestHooks {
    this.#assertOpen();
    const maps = new Map(this.#object.maps().map((m) => [m.name, m.fd]));
    return {
      binding: this.#binding,
      progFd: (name) => {
        const p = this.#progs.get(name);
        if (!p) throw new RangeError(`no program ${name}`);
        return p.fd;
      },
      mapFd: (name) => {
        const fd = maps.get(name);
        if (fd === undefined) throw new RangeError(`no map ${name}`);
        return fd;
      },
    };
  }

  #assertOpen(): void {
    if (this.#closed) throw new NativeError('NM_ERR_REDIRECT_CLOSED', 'this Redirector was closed; open a new one');
  }

  #restore(mapFd: number, key: Buffer, previous: Buffer | null): void {
    if (previous) this.#binding.mapUpdate(mapFd, key, previous, BPF_ANY);
    else this.#binding.mapDelete(mapFd, key);
  }

  #deletePodEntries(ip: string, netnsCookie?: bigint): void {
    const b = this.#binding;
    const enrKey = ipv4Key(ip);
    const enr = b.mapLookup(this.#maps.enrolled, enrKey);
    const cookies = new Set<bigint>();
    if (netnsCookie !== undefined) cookies.add(netnsCookie);
    if (enr) cookies.add(decodeEnrolled(enr).netnsCookie);
    for (const c of cookies) {
      const cfg = b.mapLookup(this.#maps.podCfg, u64(c));
      // Only when it still belongs to this pod: the netns may have been reused meanwhile.
      if (cfg && decodePodCfg(cfg).podIp === ip) b.mapDelete(this.#maps.podCfg, u64(c));
    }
    b.mapDelete(this.#maps.enrolled, enrKey);
    b.mapDelete(this.#maps.listeners, encodeListenerKey(ip, NM_LISTENER_PLAINTEXT));
    b.mapDelete(this.#maps.listeners, encodeListenerKey(ip, NM_LISTENER_HBONE));
  }
}

function listPodDirs(pinRoot: string): string[] {
  const pods = join(pinRoot, 'pods');
  if (!existsSync(pods)) return [];
  return readdirSync(pods, { withFileTypes: true })
    .filter((d) => d.isDirectory())
    .map((d) => d.name)
    .sort();
}

/** Detaches and unpins every link in a pod directory, then removes it; collects failures. */
async function detachPodDir(binding: NativeBinding, dir: string, failures: unknown[]): Promise<void> {
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
