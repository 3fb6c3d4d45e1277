// Enrollment: turns a CNI ADD for an ambient pod into captured traffic (listeners in the
// pod's namespace, eBPF attached to its cgroup and namespace, state persisted for adoption)
// and a DEL into a clean detach. A new pod's failed enrollment undoes what it did; a pod
// that was enrolled before (an adoption, a repeated ADD) is never detached by a failure: it
// stays enrolled, so its connections are refused, and is retried with backoff until it succeeds.
import { existsSync, mkdirSync, readFileSync, readdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { AgentError } from '../errors.js';
import type { Logger } from '../log.js';
import type { NodeProxy, LocalPod } from '../proxy/index.js';
import type { PodRedirectSpec } from '../redirect/index.js';
import { findPodCgroup } from './cgroups.js';
import { sameNetns } from './netns-find.js';

/** The subset of the redirect facade enrollment uses. */
export interface RedirectBackend {
  attachPod(spec: PodRedirectSpec): Promise<void>;
  detachPod(uid: string, ip?: string): Promise<void>;
  listPinnedPods(): string[];
  /** The links pinned for a pod, or null: whether some agent enrolled it. */
  podAttachment(uid: string): { links: readonly string[] } | null;
  registerInboundListener(podIp: string, kind: 'plaintext' | 'hbone', fd: number): void;
}

/** A pod that is enrolled in the kernel but that this agent could not (yet) serve. */
export interface PendingPod {
  uid: string;
  pod: string;
  ip: string;
  error: string;
  attempts: number;
  since: string;
  nextRetryAt: string;
}

interface Pending {
  pod: EnrolledPod;
  error: string;
  attempts: number;
  since: string;
  nextRetryAt: number;
  timer: NodeJS.Timeout;
}

const RETRY_FIRST_MS = 200;
const RETRY_MAX_MS = 15_000;

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
  readonly #pending = new Map<string, Pending>();
  readonly #redirect: RedirectBackend;
  readonly #proxy: Pick<NodeProxy, 'addPod' | 'removePod'>;
  readonly #dir: string;
  readonly #cgroupRoot: string;
  readonly #log: Logger;
  readonly #onRecovered: ((p: EnrolledPod) => void) | undefined;
  readonly #onUnenrolled: ((uid: string) => void) | undefined;
  readonly #retry: { firstMs: number; maxMs: number };
  /** Serializes work per pod UID: a DEL never races its ADD. */
  readonly #locks = new Map<string, Promise<unknown>>();
  #stopped = false;

  constructor(o: {
    redirect: RedirectBackend;
    proxy: Pick<NodeProxy, 'addPod' | 'removePod'>;
    podsDir: string;
    cgroupRoot: string;
    log: Logger;
    /** A pending pod's retry succeeded. */
    onRecovered?: (p: EnrolledPod) => void;
    /** A pod left (CNI DEL, or its namespace went while it waited): what it held may be pruned. */
    onUnenrolled?: (uid: string) => void;
    retry?: { firstMs: number; maxMs: number };
  }) {
    this.#redirect = o.redirect;
    this.#proxy = o.proxy;
    this.#dir = o.podsDir;
    this.#cgroupRoot = o.cgroupRoot;
    this.#log = o.log.child({ component: 'enroll' });
    this.#onRecovered = o.onRecovered;
    this.#onUnenrolled = o.onUnenrolled;
    this.#retry = o.retry ?? { firstMs: RETRY_FIRST_MS, maxMs: RETRY_MAX_MS };
    mkdirSync(this.#dir, { recursive: true });
  }

  pods(): EnrolledPod[] {
    return [...this.#pods.values()];
  }

  get(uid: string): EnrolledPod | undefined {
    return this.#pods.get(uid);
  }

  /** Pods enrolled in the kernel (connections refused) whose listeners or links are being retried. */
  pending(): PendingPod[] {
    return [...this.#pending.values()].map((p) => ({
      uid: p.pod.uid,
      pod: `${p.pod.namespace}/${p.pod.name}`,
      ip: p.pod.ip,
      error: p.error,
      attempts: p.attempts,
      since: p.since,
      nextRetryAt: new Date(p.nextRetryAt).toISOString(),
    }));
  }

  /** The pending pods' specs (for pod status reports: they are enrolled). */
  pendingPods(): EnrolledPod[] {
    return [...this.#pending.values()].map((p) => p.pod);
  }

  /** Stops every retry (the agent is stopping). */
  stop(): void {
    this.#stopped = true;
    for (const p of this.#pending.values()) clearTimeout(p.timer);
  }

  /** UIDs with enrollment work queued or running (none once the node is idle). */
  inFlight(): number {
    return this.#locks.size;
  }

  #serial<T>(uid: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.#locks.get(uid) ?? Promise.resolve();
    const next = prev.then(fn, fn);
    const tail = next.then(() => {}, () => {});
    this.#locks.set(uid, tail);
    // The last one out removes the UID's entry, so pods that came and went leave nothing here.
    void tail.then(() => {
      if (this.#locks.get(uid) === tail) this.#locks.delete(uid);
    });
    return next;
  }

  /** Some agent enrolled this pod before: its record is on disk or its links are pinned. */
  #enrolledBefore(uid: string): boolean {
    return existsSync(join(this.#dir, `${uid}.json`)) || this.#redirect.podAttachment(uid) !== null;
  }

  async enroll(pod: Omit<EnrolledPod, 'cgroupPath' | 'enrolledAt'> & { cgroupPath?: string; enrolledAt?: string }): Promise<EnrolledPod> {
    return this.#serial(pod.uid, async () => {
      const existing = this.#pods.get(pod.uid);
      // The same namespace by another path (the pod watch found it under /proc, the CNI ADD
      // names the runtime's bind mount) is the same pod: enrolled once.
      if (existing && existing.ip === pod.ip && sameNetns(existing.netnsPath, pod.netnsPath)) return existing;
      if (existing) await this.#unenroll(existing.uid);
      const cgroupPath = pod.cgroupPath ?? findPodCgroup(this.#cgroupRoot, pod.uid);
      if (!cgroupPath) {
        throw new AgentError('NM_ERR_ENROLL', `no cgroup found for pod UID ${pod.uid} under ${this.#cgroupRoot} (looked for pod<uid> and kubepods-*-pod<uid>.slice)`, { where: `${pod.namespace}/${pod.name}` });
      }
      const full: EnrolledPod = { ...pod, cgroupPath, enrolledAt: pod.enrolledAt ?? new Date().toISOString() };
      const before = this.#enrolledBefore(full.uid);
      // The record first: an agent adopting at this moment (the other one of an upgrade) then
      // sees an enrolled pod to adopt, never pinned links without a record to remove.
      this.#persist(full);
      const t0 = performance.now();
      let listening = false;
      let attaching = false;
      try {
        await this.#proxy.addPod(full);
        listening = true;
        attaching = true;
        await this.#redirect.attachPod({ uid: full.uid, cgroupPath, netnsPath: full.netnsPath, ip: full.ip, ...full.exclusions });
      } catch (err) {
        if (before) {
          // Destructive clean-up only by the owner: what was enrolled stays enrolled (fail
          // closed) and this agent keeps trying to serve it.
          this.#schedule(full, err);
          throw err;
        }
        // A new pod: undo exactly what this call did (an attach that failed undid its own
        // steps, except the last one, which leaves the pod enrolled).
        if (listening) await this.#proxy.removePod(full.uid).catch(() => {});
        if (attaching) await this.#redirect.detachPod(full.uid, full.ip).catch(() => {});
        rmSync(join(this.#dir, `${full.uid}.json`), { force: true });
        throw err;
      }
      this.#pods.set(full.uid, full);
      const wasPending = this.#clearPending(full.uid);
      this.#log.info({ pod: `${full.namespace}/${full.name}`, uid: full.uid, ip: full.ip, ms: Math.round(performance.now() - t0), ...(wasPending ? { afterAttempts: wasPending.attempts } : {}) }, wasPending ? 'pod enrolled after retrying' : 'pod enrolled');
      if (wasPending) this.#onRecovered?.(full);
      return full;
    });
  }

  /** Retries a pod that stays enrolled, with exponential backoff and jitter, until it is served. */
  #schedule(pod: EnrolledPod, err: unknown): void {
    const prev = this.#pending.get(pod.uid);
    if (prev) clearTimeout(prev.timer);
    const attempts = (prev?.attempts ?? 0) + 1;
    const base = Math.min(this.#retry.firstMs * 2 ** (attempts - 1), this.#retry.maxMs);
    const delay = Math.round(base * (0.8 + Math.random() * 0.4));
    const error = (err as Error).message;
    if (this.#stopped) return;
    const timer = setTimeout(() => void this.#retryPod(pod.uid), delay);
    timer.unref();
    this.#pending.set(pod.uid, { pod, error, attempts, since: prev?.since ?? new Date().toISOString(), nextRetryAt: Date.now() + delay, timer });
    this.#log.error({ err, pod: `${pod.namespace}/${pod.name}`, uid: pod.uid, attempts, retryMs: delay }, 'cannot serve an enrolled pod; it stays enrolled (its connections are refused, never let through) and is retried');
  }

  async #retryPod(uid: string): Promise<void> {
    const p = this.#pending.get(uid);
    if (!p || this.#stopped) return;
    if (!existsSync(p.pod.netnsPath) || !existsSync(p.pod.cgroupPath)) {
      // The pod is gone while it waited: nothing is left to protect.
      await this.unenroll(uid).catch((err: unknown) => this.#log.warn({ err, uid }, 'cleaning up a pending pod whose namespace is gone failed'));
      return;
    }
    await this.enroll(p.pod).catch(() => {}); // a failure reschedules itself
  }

  #clearPending(uid: string): Pending | undefined {
    const p = this.#pending.get(uid);
    if (p) clearTimeout(p.timer);
    this.#pending.delete(uid);
    return p;
  }

  async unenroll(uid: string): Promise<boolean> {
    try {
      return await this.#serial(uid, () => this.#unenroll(uid));
    } finally {
      this.#onUnenrolled?.(uid);
    }
  }

  /** The pod records of the node (this agent's and any other's beside it, during an upgrade). */
  recorded(): EnrolledPod[] {
    const names = readdirSync(this.#dir).filter((x) => x.endsWith('.json'));
    return names.map((f) => this.#load(f.slice(0, -5))).filter((p): p is EnrolledPod => p !== undefined);
  }

  async #unenroll(uid: string): Promise<boolean> {
    const pod = this.#pods.get(uid) ?? this.#clearPending(uid)?.pod ?? this.#load(uid);
    this.#clearPending(uid);
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
   * only the listeners are reopened (and links updated to this agent's programs). A pod that
   * cannot be adopted stays enrolled and is retried (see pending()). Pods whose namespace is
   * gone are detached; pins with no record are removed. Run again, it picks up what another
   * agent of the node enrolled meanwhile.
   */
  async adopt(): Promise<{ adopted: string[]; removed: string[]; pending: string[] }> {
    const adopted: string[] = [];
    const removed: string[] = [];
    const pending: string[] = [];
    const recorded = new Set<string>();
    for (const f of readdirSync(this.#dir).filter((x) => x.endsWith('.json'))) {
      const uid = f.slice(0, -5);
      recorded.add(uid);
      if (this.#pods.has(uid) || this.#pending.has(uid)) continue;
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
      } catch {
        pending.push(`${p.namespace}/${p.name}`); // logged and scheduled by enroll
      }
    }
    for (const uid of this.#redirect.listPinnedPods()) {
      if (recorded.has(uid)) continue;
      await this.#redirect.detachPod(uid).catch(() => {});
      removed.push(uid);
    }
    return { adopted, removed, pending };
  }

  /**
   * Follows the records another agent of the node keeps (during an upgrade the newer one
   * takes the CNI requests): a pod whose record is gone was unenrolled by that agent, so
   * this one closes its own listeners for it, and detaches nothing. Returns their UIDs.
   */
  async forgetUnrecorded(): Promise<string[]> {
    const gone: string[] = [];
    for (const uid of [...this.#pods.keys(), ...this.#pending.keys()]) {
      if (existsSync(join(this.#dir, `${uid}.json`))) continue;
      await this.#serial(uid, async () => {
        if (existsSync(join(this.#dir, `${uid}.json`)) || (!this.#pods.has(uid) && !this.#pending.has(uid))) return;
        this.#clearPending(uid);
        this.#pods.delete(uid);
        await this.#proxy.removePod(uid);
        gone.push(uid);
      });
    }
    return gone;
  }
}
