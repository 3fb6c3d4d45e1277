// The control plane's Kubernetes API source: one informer per kind, each object validated as
// the config directory's are and kept at its last good version, folded into the same
// ConfigSnapshot the directory source produces. Kinds the server does not serve (a CRD not
// installed) are skipped and looked for again periodically; while the API is unreachable the
// last good state stays served and the source reports itself degraded.
import { EventEmitter } from 'node:events';
import { UsageError } from '../errors.js';
import { log as rootLog, type Logger } from '../log.js';
import { groupVersion, KindInformer, KubeApi, loadKubeConfig, type InformerOptions, type KubeConnectOptions, type KubeKind, type Raw } from '../kube/index.js';
import { KubeStatusWriter, type StatusInput } from './kube-status.js';
import { fromApi, rawIdentity } from './kube-translate.js';
import { buildSnapshot, ConfigSource, type ConfigSnapshot } from './sources.js';
import { DEFAULT_MESH, type MeshSettings } from './translate.js';
import type { ConfigObject, ConfigProblem } from './validate.js';

export interface KubeSourceOptions extends KubeConnectOptions, InformerOptions {
  /** How often discovery looks for kinds not served yet (a CRD installed later); default 30 s. */
  rediscoverMs?: number;
  /** Quiet period that folds a burst of events (a relist) into one snapshot; default 20 ms. */
  debounceMs?: number;
  /** Write HTTPRoute and AuthorizationPolicy status (default true). */
  writeStatus?: boolean;
  mesh?: MeshSettings;
  logger?: Logger;
}

interface Entry {
  raw: Raw;
  /** The version served: the last one that validated. */
  good?: ConfigObject;
  /** Why the current version is not served. */
  problem?: ConfigProblem;
}

export interface KubeSourceStatus {
  /** The first list of every served kind has completed. */
  synced: boolean;
  /** Some kind cannot be listed or watched right now: its last good state is served. */
  degraded: boolean;
  /** One line for readiness: `ready`, `syncing …` or `degraded: …`. */
  detail: string;
  kinds: Record<string, string>;
}

/** What the Kubernetes source watches (all namespaces). */
export const KUBE_KINDS: readonly KubeKind[] = [
  { group: '', version: 'v1', kind: 'Namespace', plural: 'namespaces' },
  { group: '', version: 'v1', kind: 'Pod', plural: 'pods' },
  { group: '', version: 'v1', kind: 'Service', plural: 'services' },
  { group: 'discovery.k8s.io', version: 'v1', kind: 'EndpointSlice', plural: 'endpointslices' },
  { group: 'security.istio.io', version: 'v1', kind: 'AuthorizationPolicy', plural: 'authorizationpolicies' },
  { group: 'security.istio.io', version: 'v1', kind: 'PeerAuthentication', plural: 'peerauthentications' },
  { group: 'security.istio.io', version: 'v1', kind: 'RequestAuthentication', plural: 'requestauthentications' },
  { group: 'gateway.networking.k8s.io', version: 'v1', kind: 'HTTPRoute', plural: 'httproutes' },
  { group: 'networking.istio.io', version: 'v1', kind: 'VirtualService', plural: 'virtualservices' },
  { group: 'networking.istio.io', version: 'v1', kind: 'DestinationRule', plural: 'destinationrules' },
];

const KIND_OF = (name: string): KubeKind => KUBE_KINDS.find((k) => k.kind === name)!;
const every = (ms: number): string => (ms >= 1000 ? `${Math.round(ms / 1000)}s` : `${ms}ms`);

export class KubeSource extends EventEmitter<{ change: [ConfigSnapshot] }> {
  readonly api: KubeApi;
  readonly #opts: KubeSourceOptions;
  readonly #log: Logger;
  readonly #informers = new Map<string, KindInformer>();
  /** Kinds logged as not served, so each is logged once (and again when it comes and goes). */
  readonly #missing = new Set<string>();
  readonly #entries = new Map<string, Entry>();
  readonly #reported = new Map<string, string>();
  readonly #status: KubeStatusWriter | undefined;
  #snapshot: ConfigSnapshot = buildSnapshot([], []);
  #synced = false;
  #stopped = false;
  #discoveryError: string | undefined;
  #debounce: NodeJS.Timeout | undefined;
  #rediscover: NodeJS.Timeout | undefined;
  #wake: (() => void) | undefined;

  constructor(opts: KubeSourceOptions) {
    super();
    this.#opts = opts;
    this.#log = (opts.logger ?? rootLog).child({ component: 'kube-source' });
    this.api = new KubeApi(loadKubeConfig(opts));
    if (opts.writeStatus ?? true) this.#status = new KubeStatusWriter(this.api, opts.mesh ?? DEFAULT_MESH, this.#log);
  }

  snapshot(): ConfigSnapshot {
    return this.#snapshot;
  }

  /** Status PATCH requests sent (for tests and /debug). */
  get statusWrites(): number {
    return this.#status?.writes ?? 0;
  }

  status(): KubeSourceStatus {
    const kinds = Object.fromEntries(KUBE_KINDS.map((k) => [k.kind, this.#informers.get(k.kind)?.state ?? (this.#missing.has(k.kind) ? 'not served' : 'pending')]));
    const failing = [...this.#informers.values()].filter((i) => i.state === 'failing');
    const degraded = this.#synced && failing.length > 0;
    const detail = !this.#synced
      ? `syncing with the Kubernetes API at ${this.api.server}${this.#discoveryError ? ` (${this.#discoveryError})` : ''}`
      : degraded
        ? `degraded: cannot watch ${failing.map((i) => i.kind.plural).join(', ')} (${failing[0]!.lastError ?? 'error'}); serving the last good state`
        : 'ready';
    return { synced: this.#synced, degraded, detail, kinds };
  }

  /** Discovers, starts the informers and resolves once each served kind has been listed once. */
  async start(): Promise<void> {
    // The retry timers are unref'd (they must not hold a stopping process); until the listeners
    // exist nothing else keeps the process alive while it waits for the API.
    const keepAlive = setInterval(() => undefined, 60_000);
    try {
      await this.#sync();
    } finally {
      clearInterval(keepAlive);
    }
  }

  async #sync(): Promise<void> {
    let failures = 0;
    for (;;) {
      if (this.#stopped) return;
      try {
        await this.#discover();
        this.#discoveryError = undefined;
        break;
      } catch (err) {
        const delay = Math.min(this.#opts.maxBackoffMs ?? 30_000, (this.#opts.backoffMs ?? 1000) * 2 ** failures++);
        this.#discoveryError = (err as Error).message;
        this.#log.warn({ err: this.#discoveryError, server: this.api.server, retryInMs: delay }, 'cannot reach the Kubernetes API; retrying');
        await new Promise((r) => setTimeout(r, delay));
      }
    }
    await new Promise<void>((resolve) => {
      this.#wake = () => {
        if (this.#stopped || [...this.#informers.values()].every((i) => i.synced || i.state === 'missing')) resolve();
      };
      this.#wake();
    });
    this.#wake = undefined;
    if (this.#stopped) return;
    this.#synced = true;
    this.#rebuild();
    this.#log.info({ server: this.api.server, ...this.status().kinds }, 'Kubernetes source synced');
    this.#rediscover = setInterval(() => {
      this.#discover().catch(() => undefined); // the informers report the outage
      this.#syncStatus();
    }, this.#opts.rediscoverMs ?? 30_000);
    this.#rediscover.unref();
  }

  stop(): void {
    this.#stopped = true;
    clearTimeout(this.#debounce);
    clearInterval(this.#rediscover);
    for (const i of this.#informers.values()) i.stop();
    this.#wake?.();
  }

  /** Starts an informer for every kind the server serves that has none; logs each kind not served, once. */
  async #discover(): Promise<void> {
    const served = await this.api.servedGroupVersions();
    const resources = new Map<string, Set<string>>();
    for (const k of KUBE_KINDS) {
      if (this.#stopped || this.#informers.has(k.kind)) continue;
      const gv = groupVersion(k);
      let ok = served.has(gv);
      if (ok) {
        if (!resources.has(gv)) resources.set(gv, await this.api.resourcesOf(gv));
        ok = resources.get(gv)!.has(k.plural);
      }
      if (!ok) {
        if (!this.#missing.has(k.kind)) {
          this.#missing.add(k.kind);
          this.#log.info({ kind: k.kind, apiVersion: gv }, `${gv} ${k.plural} is not served (CRD not installed?); skipped, looking again every ${every(this.#opts.rediscoverMs ?? 30_000)}`);
        }
        continue;
      }
      if (this.#missing.delete(k.kind)) this.#log.info({ kind: k.kind, apiVersion: gv }, `${gv} ${k.plural} is served now; watching it`);
      this.#watch(k);
    }
  }

  #watch(k: KubeKind): void {
    const inf = new KindInformer(this.api, k, this.#log, this.#opts);
    this.#informers.set(k.kind, inf);
    inf.on('listed', (items) => this.#listed(k, items));
    inf.on('upsert', (raw) => this.#upsert(raw));
    inf.on('remove', (raw) => this.#remove(raw));
    inf.on('state', (s) => {
      if (s === 'missing') {
        this.#informers.delete(k.kind);
        this.#missing.add(k.kind);
      }
      this.#wake?.();
    });
    inf.start();
  }

  /** A full list is the kind's whole content: what it no longer holds is gone. */
  #listed(k: KubeKind, items: Raw[]): void {
    const ids = new Set(items.map(rawIdentity));
    for (const id of [...this.#entries.keys()]) {
      if (id.startsWith(`${k.kind}/`) && !ids.has(id)) {
        this.#entries.delete(id);
        this.#reported.delete(id);
      }
    }
    for (const raw of items) this.#upsert(raw, false);
    this.#schedule();
    this.#wake?.();
  }

  #upsert(raw: Raw, schedule = true): void {
    const id = rawIdentity(raw);
    const prev = this.#entries.get(id);
    const rv = raw.metadata?.resourceVersion;
    if (prev && rv && prev.raw.metadata?.resourceVersion === rv) return;
    const v = fromApi(raw);
    const entry: Entry = { raw, ...(prev?.good ? { good: prev.good } : {}) };
    if (v.kind === 'object') entry.good = v.object;
    else if (v.kind === 'skip') delete entry.good; // a finished or hostNetwork pod: deliberately absent
    else {
      entry.problem = v.problem;
      if (this.#reported.get(id) !== v.problem.message) {
        const kept = entry.good ? '; keeping its last good version' : '';
        this.#log.error({ code: v.problem.code, resource: v.problem.resource }, `${v.problem.message}${kept}`);
      }
    }
    if (entry.problem) this.#reported.set(id, entry.problem.message);
    else this.#reported.delete(id);
    this.#entries.set(id, entry);
    if (schedule) this.#schedule();
  }

  #remove(raw: Raw): void {
    const id = rawIdentity(raw);
    this.#reported.delete(id);
    if (this.#entries.delete(id)) this.#schedule();
  }

  #schedule(): void {
    if (!this.#synced || this.#stopped || this.#debounce) return;
    this.#debounce = setTimeout(() => {
      this.#debounce = undefined;
      this.#rebuild();
    }, this.#opts.debounceMs ?? 20);
    this.#debounce.unref();
  }

  #rebuild(): void {
    if (this.#stopped) return;
    const ids = [...this.#entries.keys()].sort();
    const entries = ids.map((id) => this.#entries.get(id)!);
    this.#snapshot = buildSnapshot(
      entries.flatMap((e) => (e.good ? [e.good] : [])),
      entries.flatMap((e) => (e.problem ? [e.problem] : [])),
    );
    this.emit('change', this.#snapshot);
    this.#syncStatus();
  }

  #syncStatus(): void {
    if (!this.#status || !this.#synced || this.#stopped) return;
    const of = (kind: string): StatusInput[] =>
      this.#informers.has(kind) ? [...this.#entries.entries()].filter(([id]) => id.startsWith(`${kind}/`)).map(([, e]) => ({ raw: e.raw, good: e.good, problem: e.problem })) : [];
    const services = new Set(this.#snapshot.services.map((s) => `${s.metadata.namespace}/${s.metadata.name}`));
    this.#status.sync({ route: KIND_OF('HTTPRoute'), policy: KIND_OF('AuthorizationPolicy') }, of('HTTPRoute'), of('AuthorizationPolicy'), services);
  }
}

/**
 * The source a control plane reads: the config directory (read once now; a missing directory
 * throws), or the Kubernetes API, listed once before this returns. Serving nothing before that
 * matters: an empty snapshot would withdraw everything from agents that connect early.
 */
export async function openSource(o: {
  configDir?: string;
  kubernetes?: Omit<KubeSourceOptions, 'mesh' | 'logger'>;
  debounceMs?: number;
  rescanMs?: number;
  mesh: MeshSettings;
  logger: Logger;
}): Promise<ConfigSource | KubeSource> {
  if ((o.configDir === undefined) === (o.kubernetes === undefined)) throw new UsageError('give the control plane either a config directory or a Kubernetes API to read from');
  if (o.configDir !== undefined) {
    const dir = new ConfigSource(o.configDir, { debounceMs: o.debounceMs, rescanMs: o.rescanMs, logger: o.logger });
    dir.rescan(true);
    return dir;
  }
  const kube = new KubeSource({ ...o.kubernetes, mesh: o.mesh, logger: o.logger });
  await kube.start();
  return kube;
}

/**
 * Readiness of a source. The Kubernetes source is not ready while degraded: the last good state
 * is still served, but a replica that can watch the API should take new agents.
 */
export function readiness(source: ConfigSource | KubeSource): { ready: boolean; detail: string } {
  if (!(source instanceof KubeSource)) return { ready: true, detail: 'ready' };
  const s = source.status();
  return { ready: s.synced && !s.degraded, detail: s.detail };
}
