// Enrollment: turns a CNI ADD for an ambient pod into captured traffic (listeners in the
// pod's namespace, eBPF attached to its cgroup and namespace, state persisted for adoption)
// and a DEL into a clean detach. Every step is undone if a later one fails.
import { existsSync, mkdirSync, readFileSync, readdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { AgentError } from '../errors.js';
import type { Logger } from '../log.js';
import type { NodeProxy, LocalPod } from '../proxy/index.js';
import type { PodRedirectSpec } from '../redirect/index.js';
import { findPodCgroup } from './cgroups.js';

/** The subset of the redirect facade enrollment uses. */
export interface RedirectBackend {
  attachPod(spec: PodRedirectSpec): Promise<void>;
  detachPod(uid: string, ip?: string): Promise<void>;
  listPinnedPods(): string[];
  registerInboundListener(podIp: string, kind: 'plaintext' | 'hbone', fd: number): void;
}

export interface EnrolledPod extends LocalPod {
  cgroupPath: string;
  containerId: string;
  enrolledAt: string;
  exclusions: Pick<PodRedirectSpec, 'excludeInboundPorts' | 'excludeOutboundPorts' | 'excludeOutboundCidrs'>;
}

/** Istio's sidecar annotations, reused so operators bring what they know. */
export const ANNOTATIONS = {
  excludeInboundPorts: 'traffic.sidecar.istio.io/excludeInboundPorts',
  excludeOutboundPorts: 'traffic.sidecar.istio.io/excludeOutboundPorts',
  excludeOutboundCidrs: 'traffic.sidecar.istio.io/excludeOutboundIPRanges',
} as const;

function csv(s: string | undefined): string[] {
  return (s ?? '').split(',').map((x) => x.trim()).filter(Boolean);
}

function ports(s: string | undefined, where: string): number[] {
  return csv(s).map((p) => {
    const n = Number(p);
    if (!Number.isInteger(n) || n < 1 || n > 65535) throw new AgentError('NM_ERR_ENROLL', `port ${JSON.stringify(p)} is not 1-65535`, { where });
    return n;
  });
}

export function exclusionsFrom(annotations: Record<string, string>): EnrolledPod['exclusions'] {
  return {
    excludeInboundPorts: ports(annotations[ANNOTATIONS.excludeInboundPorts], `annotation ${ANNOTATIONS.excludeInboundPorts}`),
    excludeOutboundPorts: ports(annotations[ANNOTATIONS.excludeOutboundPorts], `annotation ${ANNOTATIONS.excludeOutboundPorts}`),
    excludeOutboundCidrs: csv(annotations[ANNOTATIONS.excludeOutboundCidrs]),
  };
}

export class Enroller {
  readonly #pods = new Map<string, EnrolledPod>();
  readonly #redirect: RedirectBackend;
  readonly #proxy: NodeProxy;
  readonly #dir: string;
  readonly #cgroupRoot: string;
  readonly #log: Logger;
  /** Serializes work per pod UID: a DEL never races its ADD. */
  readonly #locks = new Map<string, Promise<unknown>>();

  constructor(o: { redirect: RedirectBackend; proxy: NodeProxy; podsDir: string; cgroupRoot: string; log: Logger }) {
    this.#redirect = o.redirect;
    this.#proxy = o.proxy;
    this.#dir = o.podsDir;
    this.#cgroupRoot = o.cgroupRoot;
    this.#log = o.log.child({ component: 'enroll' });
    mkdirSync(this.#dir, { recursive: true });
  }

  pods(): EnrolledPod[] {
    return [...this.#pods.values()];
  }

  get(uid: string): EnrolledPod | undefined {
    return this.#pods.get(uid);
  }

  #serial<T>(uid: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.#locks.get(uid) ?? Promise.resolve();
    const next = prev.then(fn, fn);
    this.#locks.set(uid, next.catch(() => {}));
    return next;
  }

  async enroll(pod: Omit<EnrolledPod, 'cgroupPath' | 'enrolledAt'> & { cgroupPath?: string }): Promise<EnrolledPod> {
    return this.#serial(pod.uid, async () => {
      const existing = this.#pods.get(pod.uid);
      if (existing && existing.netnsPath === pod.netnsPath && existing.ip === pod.ip) return existing;
      if (existing) await this.#unenroll(existing.uid);
      const cgroupPath = pod.cgroupPath ?? findPodCgroup(this.#cgroupRoot, pod.uid);
      if (!cgroupPath) {
        throw new AgentError('NM_ERR_ENROLL', `no cgroup found for pod UID ${pod.uid} under ${this.#cgroupRoot} (looked for pod<uid> and kubepods-*-pod<uid>.slice)`, { where: `${pod.namespace}/${pod.name}` });
      }
      const full: EnrolledPod = { ...pod, cgroupPath, enrolledAt: new Date().toISOString() };
      const t0 = performance.now();
      let listening = false;
      try {
        await this.#proxy.addPod(full);
        listening = true;
        await this.#redirect.attachPod({ uid: full.uid, cgroupPath, netnsPath: full.netnsPath, ip: full.ip, ...full.exclusions });
      } catch (err) {
        if (listening) await this.#proxy.removePod(full.uid).catch(() => {});
        await this.#redirect.detachPod(full.uid, full.ip).catch(() => {});
        throw err;
      }
      this.#pods.set(full.uid, full);
      this.#persist(full);
      this.#log.info({ pod: `${full.namespace}/${full.name}`, uid: full.uid, ip: full.ip, ms: Math.round(performance.now() - t0) }, 'pod enrolled');
      return full;
    });
  }

  async unenroll(uid: string): Promise<boolean> {
    return this.#serial(uid, () => this.#unenroll(uid));
  }

  async #unenroll(uid: string): Promise<boolean> {
    const pod = this.#pods.get(uid) ?? this.#load(uid);
    await this.#proxy.removePod(uid);
    await this.#redirect.detachPod(uid, pod?.ip);
    this.#pods.delete(uid);
    rmSync(join(this.#dir, `${uid}.json`), { force: true });
    if (pod) this.#log.info({ pod: `${pod.namespace}/${pod.name}`, uid }, 'pod unenrolled');
    return pod !== undefined;
  }

  #persist(p: EnrolledPod): void {
    const file = join(this.#dir, `${p.uid}.json`);
    writeFileSync(`${file}.tmp`, JSON.stringify(p, null, 2));
    renameSync(`${file}.tmp`, file);
  }

  #load(uid: string): EnrolledPod | undefined {
    try {
      return JSON.parse(readFileSync(join(this.#dir, `${uid}.json`), 'utf8')) as EnrolledPod;
    } catch {
      return undefined;
    }
  }

  /**
   * Adopts the pods a previous agent enrolled: their pinned programs are still attached, so
   * only the listeners are reopened (and links updated to this agent's programs). Pods
   * whose namespace is gone are detached; pins with no record are removed.
   */
  async adopt(): Promise<{ adopted: string[]; removed: string[] }> {
    const adopted: string[] = [];
    const removed: string[] = [];
    const recorded = new Set<string>();
    for (const f of readdirSync(this.#dir).filter((x) => x.endsWith('.json'))) {
      const uid = f.slice(0, -5);
      recorded.add(uid);
      const p = this.#load(uid);
      if (!p || !existsSync(p.netnsPath) || !existsSync(p.cgroupPath)) {
        await this.#redirect.detachPod(uid, p?.ip).catch(() => {});
        rmSync(join(this.#dir, f), { force: true });
        removed.push(uid);
        continue;
      }
      try {
        await this.enroll(p);
        adopted.push(`${p.namespace}/${p.name}`);
      } catch (err) {
        this.#log.error({ err, uid }, 'could not adopt pod; it stays fail-closed until re-added');
      }
    }
    for (const uid of this.#redirect.listPinnedPods()) {
      if (recorded.has(uid)) continue;
      await this.#redirect.detachPod(uid).catch(() => {});
      removed.push(uid);
    }
    return { adopted, removed };
  }
}
