// The agent's watch of its own node's Pods (fieldSelector spec.nodeName) and of the Namespaces
// (their opt-in label) in the Kubernetes API, reconciled with what is enrolled, on start and on
// every change: it adopts running pods that opted in but that no CNI ADD brought (the agent
// came later, or lost its state), enrolls pods that opt in later, and unenrolls pods that opt
// out or that the API deleted. The CNI plugin stays the fast path; this is the backstop.
import { fieldPathOf, isAmbient, objectFromRaw, type Namespace, type Pod } from '../k8s/index.js';
import { KindInformer, KubeApi, loadKubeConfig, podIpv4, podSkipReason, type InformerOptions, type KubeConnectOptions, type KubeKind, type Raw } from '../kube/index.js';
import type { Logger } from '../log.js';
import type { PodEnrollment, StillRunning } from './cni-handler.js';
import { exclusionsFrom, type EnrolledPod } from './enrollment.js';
import { netnsFinder, type NetnsFinder } from './netns-find.js';
import type { PodMeta } from './podsource.js';

const PODS: KubeKind = { group: '', version: 'v1', kind: 'Pod', plural: 'pods' };
const NAMESPACES: KubeKind = { group: '', version: 'v1', kind: 'Namespace', plural: 'namespaces' };
const POS = { file: 'kubernetes', line: 0 };

/** Which API to watch, and how its informers retry. */
export type PodWatchConnection = KubeConnectOptions & InformerOptions;

export interface PodWatchOptions extends InformerOptions {
  node: string;
  enrollment: PodEnrollment;
  log: Logger;
  /** Default: /proc scanned for the namespace holding the pod IP (netns-find.ts). */
  findNetns?: NetnsFinder;
  /** Whether this agent acts on the node now (it holds it and is not stopping); default always. */
  active?: () => boolean;
  /** Quiet period folding a burst of events into one pass (default 50 ms). */
  debounceMs?: number;
  /** A full pass this often, whatever happens (default 30 s). */
  resyncMs?: number;
  /** A pod that could not be adopted is retried after this, doubling up to maxRetryMs (default 1 s, 30 s). */
  retryMs?: number;
  maxRetryMs?: number;
}

export interface PodWatchStatus {
  server: string;
  node: string;
  /** Both informers have listed once: only from then on are pods adopted and removed. */
  synced: boolean;
  watch: { pods: string; namespaces: string };
  /** The last error of either informer (kept after it recovered), with when. */
  lastError: { message: string; at: string } | null;
  podsSeen: number;
  adopted: number;
  unenrolled: number;
  /** Pods that opted in but could not be enrolled yet: retried. */
  notAdopted: { pod: string; error: string; attempts: number }[];
}

interface Failure {
  pod: string;
  error: string;
  attempts: number;
  nextAt: number;
}

interface Decision {
  pod: string;
  ip: string | undefined;
  meta: PodMeta;
}

/** A pod to adopt: opted in, with an IP and valid exclusion annotations. */
type Adoption = Decision & { uid: string; ip: string; exclusions: EnrolledPod['exclusions'] };

export class PodWatch {
  /** A watch over the API a kubeconfig (or the in-cluster config) names; a bad one throws a UsageError now. */
  static connect(kube: PodWatchConnection, o: Omit<PodWatchOptions, keyof InformerOptions>): PodWatch {
    return new PodWatch(new KubeApi(loadKubeConfig(kube)), { ...kube, ...o });
  }

  readonly #api: KubeApi;
  readonly #o: PodWatchOptions;
  readonly #log: Logger;
  readonly #find: NetnsFinder;
  readonly #pods: KindInformer;
  readonly #nsInformer: KindInformer;
  /** This node's pods by UID, and the namespaces by name, as the API last showed them. */
  readonly #byUid = new Map<string, Raw>();
  readonly #namespaces = new Map<string, Namespace>();
  /** UIDs the API removed since the last pass (a watch DELETE, or gone from a relist). */
  readonly #gone = new Set<string>();
  readonly #failed = new Map<string, Failure>();
  /** Problems already logged, by pod key, so a bad object is named once per version. */
  readonly #reported = new Map<string, string>();
  #podsListedAt = 0;
  #nsSynced = false;
  #podsSynced = false;
  #lastError: { message: string; at: string } | null = null;
  #adopted = 0;
  #unenrolled = 0;
  #stopped = false;
  #running: Promise<void> | undefined;
  #dirty = false;
  #debounce: NodeJS.Timeout | undefined;
  #retry: NodeJS.Timeout | undefined;
  #resync: NodeJS.Timeout | undefined;

  constructor(api: KubeApi, o: PodWatchOptions) {
    this.#api = api;
    this.#o = o;
    this.#log = o.log.child({ component: 'kube-pods', node: o.node });
    this.#find = o.findNetns ?? netnsFinder();
    const informer: InformerOptions = { backoffMs: o.backoffMs, maxBackoffMs: o.maxBackoffMs, pageSize: o.pageSize, account: "the agent's service account" };
    this.#pods = new KindInformer(api, PODS, this.#log, { ...informer, fieldSelector: `spec.nodeName=${o.node}` });
    this.#nsInformer = new KindInformer(api, NAMESPACES, this.#log, informer);
    this.#pods.on('listed', (items, startedAt) => {
      const now = new Set(items.map(uidOf));
      for (const uid of this.#byUid.keys()) if (!now.has(uid)) this.#gone.add(uid);
      this.#byUid.clear();
      for (const raw of items) this.#byUid.set(uidOf(raw), raw);
      this.#podsListedAt = startedAt;
      this.#podsSynced = true;
      this.#schedule();
    });
    this.#pods.on('upsert', (raw) => {
      this.#byUid.set(uidOf(raw), raw);
      this.#gone.delete(uidOf(raw));
      this.#schedule();
    });
    this.#pods.on('remove', (raw) => {
      this.#byUid.delete(uidOf(raw));
      this.#reported.delete(uidOf(raw));
      this.#gone.add(uidOf(raw));
      this.#schedule();
    });
    this.#nsInformer.on('listed', (items) => {
      this.#namespaces.clear();
      for (const raw of items) this.#upsertNamespace(raw);
      this.#nsSynced = true;
      this.#schedule();
    });
    this.#nsInformer.on('upsert', (raw) => {
      this.#upsertNamespace(raw);
      this.#schedule();
    });
    this.#nsInformer.on('remove', (raw) => {
      this.#namespaces.delete(String(raw.metadata?.name));
      this.#reported.delete(`ns/${String(raw.metadata?.name)}`);
      this.#schedule();
    });
    for (const inf of [this.#pods, this.#nsInformer]) {
      inf.on('state', (s) => {
        if (s === 'failing' && inf.lastError) this.#lastError = { message: `${inf.kind.plural}: ${inf.lastError}`, at: new Date().toISOString() };
      });
    }
  }

  get synced(): boolean {
    return this.#podsSynced && this.#nsSynced;
  }

  /** Starts both informers; never waits for the API (the data path does not need it). */
  start(): void {
    this.#pods.start();
    this.#nsInformer.start();
    this.#resync = setInterval(() => this.#schedule(), this.#o.resyncMs ?? 30_000);
    this.#resync.unref();
  }

  /** Stops watching; what is enrolled stays enrolled. Resolves once a pass under way is over. */
  async stop(): Promise<void> {
    this.#stopped = true;
    clearTimeout(this.#debounce);
    clearTimeout(this.#retry);
    clearInterval(this.#resync);
    this.#pods.stop();
    this.#nsInformer.stop();
    await this.#running;
  }

  status(): PodWatchStatus {
    return {
      server: this.#api.server,
      node: this.#o.node,
      synced: this.synced,
      watch: { pods: this.#pods.state, namespaces: this.#nsInformer.state },
      lastError: this.#lastError,
      podsSeen: this.#byUid.size,
      adopted: this.#adopted,
      unenrolled: this.#unenrolled,
      notAdopted: [...this.#failed.values()].map((f) => ({ pod: f.pod, error: f.error, attempts: f.attempts })),
    };
  }

  /** Resolves once no pass is scheduled or running (for tests). */
  async settled(): Promise<void> {
    while (this.#debounce || this.#running) {
      await (this.#running ?? new Promise((r) => setTimeout(r, 5)));
    }
  }

  #upsertNamespace(raw: Raw): void {
    try {
      this.#namespaces.set(String(raw.metadata?.name), objectFromRaw(raw, POS, { simulated: false }) as Namespace);
    } catch (err) {
      if (!fieldPathOf(err)) throw err;
      this.#once(`ns/${String(raw.metadata?.name)}`, (err as Error).message, { namespace: raw.metadata?.name }, 'a Namespace from the API is not readable; its pods keep what they have');
    }
  }

  #schedule(): void {
    if (this.#stopped) return;
    if (this.#running) {
      this.#dirty = true;
      return;
    }
    if (this.#debounce) return;
    this.#debounce = setTimeout(() => {
      this.#debounce = undefined;
      this.#running = this.#pass()
        .catch((err: unknown) => this.#log.error({ err }, 'reconciling the node\'s pods failed; retrying at the next change'))
        .finally(() => {
          this.#running = undefined;
          if (this.#dirty) {
            this.#dirty = false;
            this.#schedule();
          }
        });
    }, this.#o.debounceMs ?? 50);
    this.#debounce.unref();
  }

  /** One reconcile of every pod of the node against what is enrolled. */
  async #pass(): Promise<void> {
    // Before both first lists a pod the API has not shown yet is not known to be gone, and a
    // namespace not seen yet is not known to have opted out: nothing is decided.
    if (!this.synced || this.#stopped || !(this.#o.active?.() ?? true)) return;
    const enrolled = new Map(this.#o.enrollment.enrolled().map((p) => [p.uid, p]));
    const adopt: Adoption[] = [];
    for (const [uid, raw] of this.#byUid) {
      const d = this.#decide(uid, raw);
      if (!d) continue;
      const mine = enrolled.get(uid);
      if (d === 'finished') {
        if (mine) await this.#release(uid, `${mine.namespace}/${mine.name}`, 'it is no longer running (phase)');
      } else if (mine && !d.meta.ambient) {
        await this.#release(uid, d.pod, 'it opted out of the mesh (label on the pod or its namespace)', { namespace: d.meta.namespace, name: d.meta.name, ip: d.ip ?? mine.ip, meta: d.meta });
      } else if (!mine && d.meta.ambient) {
        if (!d.ip) continue; // no IP yet: its sandbox is not up; the status update brings it back
        const f = this.#failed.get(uid);
        if (f && f.nextAt > Date.now()) continue;
        try {
          adopt.push({ ...d, uid, ip: d.ip, exclusions: exclusionsFrom(d.meta.annotations) });
        } catch (err) {
          this.#fail(uid, d.pod, (err as Error).message); // a bad annotation: no use looking for its netns
        }
      } else this.#failed.delete(uid);
    }
    for (const uid of this.#failed.keys()) if (!this.#byUid.has(uid)) this.#failed.delete(uid);
    // Deleted from the API: a DELETE seen, or absent from a list that started after the pod
    // was enrolled (one enrolled later may simply be newer than that list).
    for (const p of enrolled.values()) {
      if (this.#byUid.has(p.uid)) continue;
      if (this.#gone.has(p.uid) || Date.parse(p.enrolledAt) < this.#podsListedAt) await this.#release(p.uid, `${p.namespace}/${p.name}`, 'the API no longer has it');
    }
    this.#gone.clear();
    if (adopt.length) await this.#adopt(adopt);
    this.#scheduleRetry();
  }

  /** The pod's facts, 'finished' (not Running/Pending), or undefined to leave it alone. */
  #decide(uid: string, raw: Raw): Decision | 'finished' | undefined {
    const pod = `${raw.metadata?.namespace ?? '?'}/${raw.metadata?.name ?? '?'}`;
    const skip = podSkipReason(raw);
    if (skip === 'hostNetwork') return undefined; // the node's own address: never captured
    if (skip) return 'finished';
    let typed: Pod;
    try {
      // Status is not read through the loader (a dual-stack podIP is not its concern).
      typed = objectFromRaw({ ...raw, status: undefined }, POS, { simulated: false }) as Pod;
    } catch (err) {
      if (!fieldPathOf(err)) throw err;
      this.#once(uid, (err as Error).message, { pod }, 'a Pod from the API is not readable; its enrollment is left as it is');
      return undefined;
    }
    const ambient = isAmbient(typed, [...this.#namespaces.values()]);
    const m = typed.metadata;
    return { pod, ip: podIpv4(raw), meta: { uid, namespace: m.namespace, name: m.name, serviceAccount: typed.spec.serviceAccountName, labels: m.labels, annotations: m.annotations, ambient } };
  }

  async #release(uid: string, pod: string, why: string, stillRuns?: StillRunning): Promise<void> {
    this.#log.info({ pod, uid }, `unenrolling the pod: ${why}`);
    await this.#o.enrollment.release(uid, stillRuns);
    this.#unenrolled++;
  }

  /** Finds the namespaces of running pods that opted in, and enrolls them through the CNI path. */
  async #adopt(pods: Adoption[]): Promise<void> {
    let found: Map<string, { netnsPath: string } | { error: string }>;
    try {
      found = await this.#find(pods.map((p) => ({ uid: p.uid, ip: p.ip })));
    } catch (err) {
      for (const p of pods) this.#fail(p.uid, p.pod, `looking for its network namespace failed: ${(err as Error).message}`);
      return;
    }
    for (const p of pods) {
      if (this.#stopped) return;
      const hit = found.get(p.uid) ?? { error: 'the netns finder did not answer for it' };
      if ('error' in hit) {
        this.#fail(p.uid, p.pod, hit.error);
        continue;
      }
      // A CNI ADD may have enrolled it meanwhile: then there is nothing to adopt.
      if (this.#o.enrollment.enrolled().some((e) => e.uid === p.uid)) continue;
      try {
        await this.#o.enrollment.enroll({ ip: p.ip, netnsPath: hit.netnsPath, exclusions: p.exclusions }, p.meta);
      } catch (err) {
        this.#fail(p.uid, p.pod, (err as Error).message);
        continue;
      }
      const before = this.#failed.get(p.uid);
      this.#failed.delete(p.uid);
      this.#adopted++;
      this.#log.info({ pod: p.pod, uid: p.uid, ip: p.ip, netns: hit.netnsPath, ...(before ? { afterAttempts: before.attempts } : {}) }, 'adopted a running pod that opted into the mesh (no CNI ADD brought it)');
    }
  }

  #fail(uid: string, pod: string, error: string): void {
    const prev = this.#failed.get(uid);
    const attempts = (prev?.attempts ?? 0) + 1;
    const delay = Math.min(this.#o.maxRetryMs ?? 30_000, (this.#o.retryMs ?? 1000) * 2 ** (attempts - 1));
    this.#failed.set(uid, { pod, error, attempts, nextAt: Date.now() + delay });
    const fields = { pod, uid, attempts, retryInMs: delay, err: error };
    // Named once per distinct error; the retries of the same one go to debug.
    if (prev?.error !== error) this.#log.warn(fields, 'cannot adopt a pod that opted into the mesh; its traffic is not captured yet, retrying');
    else this.#log.debug(fields, 'still cannot adopt the pod');
  }

  #scheduleRetry(): void {
    clearTimeout(this.#retry);
    if (this.#failed.size === 0 || this.#stopped) return;
    const next = Math.min(...[...this.#failed.values()].map((f) => f.nextAt));
    this.#retry = setTimeout(() => this.#schedule(), Math.max(0, next - Date.now()));
    this.#retry.unref();
  }

  #once(key: string, message: string, fields: object, what: string): void {
    if (this.#reported.get(key) === message) return;
    this.#reported.set(key, message);
    this.#log.error({ ...fields, err: message }, what);
  }
}

function uidOf(raw: Raw): string {
  const uid = (raw.metadata as { uid?: unknown } | undefined)?.uid;
  return typeof uid === 'string' ? uid : `${raw.metadata?.namespace}/${raw.metadata?.name}`;
}
