// Per-pod attach, detach and adoption of the pinned redirection links and each pod's map entries.
import { existsSync, mkdirSync, readdirSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { AgentError } from '../errors.js';
import { log } from '../log.js';
import {
  BPF_ANY,
  NM_ENROLLED_F_FAIL_OPEN,
  NM_LISTENER_HBONE,
  NM_LISTENER_PLAINTEXT,
  decodeEnrolled,
  decodePodCfg,
  encodeEnrolled,
  encodeListenerKey,
  encodePodCfg,
  ipv4Key,
  u64,
} from './layout.js';
import { LINKS, detachPodDir, isUnder, listPodDirs, type LoadedProgram, type MapFds } from './loader.js';
import { nativeFailure, type NativeBinding } from './native.js';
import { netnsCookieOfPath } from './netns.js';
import { POD_LINK_NAMES, type PodAttachment, type PodRedirectSpec } from './types.js';
import { assertIPv4, assertUid, checkPodSpec } from './validate.js';

const rlog = log.child({ component: 'redirect' });

/** What this process attached for a pod: needed to delete its entries by owner later. */
interface KnownPod {
  ip: string;
  netnsCookie: bigint;
}

/**
 * The pods this process attached, over the pin directories `<pinRoot>/pods/<uid>/`. Map
 * entries are deleted by owner (netns cookie, pod IP), so a failed or stale attach never
 * removes what another attach wrote.
 */
export class PodAttachments {
  readonly #binding: NativeBinding;
  readonly #progs: ReadonlyMap<string, LoadedProgram>;
  readonly #maps: MapFds;
  readonly #pinRoot: string;
  readonly #cgroupRoot: string;
  readonly #pods = new Map<string, KnownPod>();

  constructor(o: { binding: NativeBinding; progs: ReadonlyMap<string, LoadedProgram>; maps: MapFds; pinRoot: string; cgroupRoot: string }) {
    this.#binding = o.binding;
    this.#progs = o.progs;
    this.#maps = o.maps;
    this.#pinRoot = o.pinRoot;
    this.#cgroupRoot = o.cgroupRoot;
  }

  /** The directory holding one pod's link pins. */
  podDir(uid: string): string {
    return join(this.#pinRoot, 'pods', uid);
  }

  /** See Redirector.attachPod. */
  async attach(spec: PodRedirectSpec): Promise<void> {
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
    if (!isUnder(s.cgroupPath, this.#cgroupRoot)) {
      throw new AgentError('NM_ERR_ENROLL', `cgroupPath ${s.cgroupPath} is not under the cgroup v2 root ${this.#cgroupRoot}`, { where });
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

  /** The links pinned for a pod (what attach left, or a previous agent did); null if none. */
  attachment(uid: string): PodAttachment | null {
    assertUid(uid);
    const dir = this.podDir(uid);
    if (!existsSync(dir)) return null;
    const names = new Set(readdirSync(dir));
    return { uid, links: POD_LINK_NAMES.filter((n) => names.has(n)) };
  }

  /** See Redirector.detachPod. */
  async detach(uid: string, ip?: string): Promise<void> {
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
  listPinned(): string[] {
    return listPodDirs(this.#pinRoot);
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
