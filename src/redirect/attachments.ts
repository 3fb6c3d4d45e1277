// Per-pod attach, detach and adoption of the pinned redirection links, each pod's map entries
// and the in-pod routing that inbound delivery with the client's address needs.
import { existsSync, mkdirSync, readdirSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { AgentError } from '../errors.js';
import { log } from '../log.js';
import { BPF_ANY, NM_ENROLLED_F_FAIL_OPEN, encodeEnrolled, encodePodCfg, ipv4Key, u64 } from './layout.js';
import { LINKS, detachPodDir, isUnder, listPodDirs, type LoadedProgram, type MapFds } from './loader.js';
import { nativeFailure, type NativeBinding } from './native.js';
import { setMigrateReq } from './migrate.js';
import { installDeliveryRouting, netnsCookieOfPath, removeDeliveryRouting } from './netns.js';
import { PodOwners, type OwnerHint } from './owners.js';
import { POD_LINK_NAMES, type PodAttachment, type PodRedirectSpec } from './types.js';
import { assertIPv4, assertUid, checkPodSpec } from './validate.js';

const rlog = log.child({ component: 'redirect' });

/** What this process attached for a pod: needed to delete its entries by owner later. */
interface KnownPod {
  ip: string;
  netnsCookie: bigint;
  netnsPath: string;
  /** The delivery sysctls' values from before the first install, written back at detach. */
  restore: { fwmarkAccept: number; fwmarkReflect: number };
  /** tcp_migrate_req from before this process set it (0 when adopted), written back at detach. */
  migrateReq?: number;
}

/**
 * When our rule was already in the netns (an adoption), this or an earlier agent set the
 * sysctls, so what came before is not known here: it was the netns default, 0.
 */
const NETNS_DEFAULTS = { fwmarkAccept: 0, fwmarkReflect: 0 };

/**
 * The pods this process attached, over the pin directories `<pinRoot>/pods/<uid>/`. Map
 * entries are deleted by owner (the netns cookie each pod UID was attached with, recorded in
 * nm_pod_owner), so a failed or stale attach never removes what another attach wrote, and a
 * pod never removes the entries of a newer pod given its IP.
 */
export class PodAttachments {
  readonly #binding: NativeBinding;
  readonly #progs: ReadonlyMap<string, LoadedProgram>;
  readonly #maps: MapFds;
  readonly #pinRoot: string;
  readonly #cgroupRoot: string;
  readonly #pods = new Map<string, KnownPod>();
  readonly #owners: PodOwners;

  constructor(o: { binding: NativeBinding; progs: ReadonlyMap<string, LoadedProgram>; maps: MapFds; pinRoot: string; cgroupRoot: string }) {
    this.#owners = new PodOwners(o.binding, o.maps);
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
    const previous = this.#pods.get(s.uid);
    let before: OwnerHint | null = null;
    const undo: Array<() => Promise<void> | void> = [];
    let step = 'reading nm_pod_owner';
    try {
      // Who this UID was before: this process's view, else the record an earlier agent left.
      before = previous ?? this.#owners.recorded(s.uid);
      step = 'creating the pin directory';
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

      step = 'writing nm_pod_owner';
      undo.push(this.#owners.record(s.uid, { ip: s.ip, netnsCookie: cookie }));
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

    // Same UID, new IP or netns (a re-enrollment): drop the entries the old one owned.
    if (before && (before.ip !== s.ip || before.netnsCookie !== cookie)) {
      try {
        this.#owners.deleteOwned(s.uid, before, { ip: s.ip, netnsCookie: cookie });
      } catch (err) {
        rlog.warn({ err, uid: s.uid, previousIp: before.ip }, 'deleting the map entries of the previous attachment failed');
      }
    }
    if (previous && previous.netnsPath !== s.netnsPath) {
      await this.#removeRouting(s.uid, previous).catch((err: unknown) => rlog.warn({ err, uid: s.uid }, 'removing the delivery routing of the previous netns failed'));
    }
    const sameNetns = previous?.netnsPath === s.netnsPath;
    const known: KnownPod = { ip: s.ip, netnsCookie: cookie, netnsPath: s.netnsPath, restore: sameNetns ? previous!.restore : NETNS_DEFAULTS };
    this.#pods.set(s.uid, known);
    await this.#migrateOn(s.uid, s.netnsPath, createdDir, sameNetns ? previous : undefined, known);

    // Last, and never undone on failure: the pod is enrolled from here on, so a failure
    // leaves its inbound dropped or reset (fail closed), never delivered some other way.
    try {
      const r = await installDeliveryRouting(s.netnsPath);
      if (r.ruleAdded && !sameNetns) known.restore = r.previous;
    } catch (err) {
      throw new AgentError('NM_ERR_ENROLL', `the in-pod routing of inbound delivery could not be installed in ${s.netnsPath} ` +
          `(${(err as Error).message}); the pod stays enrolled and its inbound connections are reset or dropped, never delivered, until enrollment is retried`,
        { where, cause: err, step: 'delivery-routing' },
      );
    }
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
    const failures: unknown[] = [];
    let owner: OwnerHint | undefined = known;
    try {
      // After a restart the record says which netns and IP this UID was attached with.
      owner ??= this.#owners.recorded(uid) ?? (ip !== undefined ? { ip } : undefined);
    } catch (err) {
      failures.push(err);
    }
    const podIp = owner?.ip ?? ip;

    await detachPodDir(this.#binding, this.podDir(uid), failures);
    if (known) await this.#removeRouting(uid, known).catch((err: unknown) => failures.push(err));
    if (known?.migrateReq === 0 && existsSync(known.netnsPath)) {
      await setMigrateReq(known.netnsPath, 0).catch((err: unknown) => rlog.warn({ err, uid }, 'could not write tcp_migrate_req back in the pod netns'));
    }
    try {
      if (owner) this.#owners.deleteOwned(uid, owner);
      this.#owners.forget(uid, owner?.netnsCookie);
    } catch (err) {
      failures.push(err);
    }
    this.#pods.delete(uid);
    if (failures.length > 0) {
      throw nativeFailure('NM_ERR_NATIVE', `detaching the redirection left ${failures.length} error(s); the first`, failures[0], `pod ${uid}`);
    }
    rlog.info({ uid, ip: podIp }, 'pod redirection detached');
  }

  /** The pod this process attached in the netns with this cookie. */
  ownerOfNetns(netnsCookie: bigint): { uid: string; ip: string } | undefined {
    for (const [uid, p] of this.#pods) if (p.netnsCookie === netnsCookie) return { uid, ip: p.ip };
    return undefined;
  }

  /** UIDs of pods that have pinned links: the pods a restarted agent must adopt. */
  listPinned(): string[] {
    return listPodDirs(this.#pinRoot);
  }

  /**
   * Turns tcp_migrate_req on in the pod's netns (src/redirect/migrate.ts), once per netns per
   * process. Best effort: without it an upgrade's listener handoff may reset the connections
   * queued on the old agent's listener at the instant it closes, and nothing else.
   */
  async #migrateOn(uid: string, netnsPath: string, fresh: boolean, previous: KnownPod | undefined, known: KnownPod): Promise<void> {
    if (previous?.migrateReq !== undefined) {
      known.migrateReq = previous.migrateReq;
      return;
    }
    try {
      const before = await setMigrateReq(netnsPath, 1);
      // Adopted: an earlier agent may have set it, so what came before is the netns default.
      known.migrateReq = fresh ? before : 0;
    } catch (err) {
      rlog.warn({ err, uid, netns: netnsPath }, 'could not turn on tcp_migrate_req in the pod netns; an agent upgrade may reset connections queued at the instant of the handoff');
    }
  }

  /** Removes the pod's delivery rule and route and writes its sysctls back; a gone netns is fine. */
  async #removeRouting(uid: string, pod: KnownPod): Promise<void> {
    const r = await removeDeliveryRouting(pod.netnsPath, pod.restore);
    if (r.ruleRemoved || r.routeRemoved) rlog.debug({ uid, netns: pod.netnsPath, ...r }, 'in-pod delivery routing removed');
  }

  #restore(mapFd: number, key: Buffer, previous: Buffer | null): void {
    if (previous) this.#binding.mapUpdate(mapFd, key, previous, BPF_ANY);
    else this.#binding.mapDelete(mapFd, key);
  }
}
