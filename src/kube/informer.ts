// One resilient informer per watched kind, shared by the control plane's source and the agent's
// pod watch: @kubernetes/client-node's ListWatch (list, then watch from the list's
// resourceVersion, relist on 410 Gone), plus what it lacks: watch bookmarks, restart with backoff
// after an error (it stops for good on any error other than 410 or its own timeout), a health
// state for readiness, a 404 meaning "not served", and a field selector on list and watch.
import { EventEmitter } from 'node:events';
import type { KubeConfig, KubernetesObject, ListWatch, Watch } from '@kubernetes/client-node';
import { kubeLib } from './lib.js';
import type { Logger } from '../log.js';
import { statusOf, type KubeApi } from './client.js';

export interface KubeKind {
  /** '' for the core group. */
  group: string;
  version: string;
  kind: string;
  plural: string;
}

export const groupVersion = (k: KubeKind): string => (k.group ? `${k.group}/${k.version}` : k.version);
export const collectionPath = (k: KubeKind): string => (k.group ? `/apis/${k.group}/${k.version}/${k.plural}` : `/api/${k.version}/${k.plural}`);
export const objectPath = (k: KubeKind, ns: string, name: string): string =>
  `${k.group ? `/apis/${k.group}/${k.version}` : `/api/${k.version}`}${ns ? `/namespaces/${encodeURIComponent(ns)}` : ''}/${k.plural}/${encodeURIComponent(name)}`;

export type Raw = Record<string, unknown> & { metadata?: { name?: string; namespace?: string; resourceVersion?: string } };
export type InformerState = 'syncing' | 'ok' | 'failing' | 'missing';

export interface InformerOptions {
  /** First retry delay after an error; doubles up to maxBackoffMs, with ±20% jitter (default 1000). */
  backoffMs?: number;
  maxBackoffMs?: number;
  /** Items per list page (default 500). */
  pageSize?: number;
  /** Only objects matching this field selector, on list and watch (e.g. `spec.nodeName=n1`). */
  fieldSelector?: string;
  /** Whose RBAC a 403 asks to fix (default "the control plane's service account"). */
  account?: string;
}

type Events = {
  /** A full list: the kind's whole current content, and when its first page was asked for (ms epoch). */
  listed: [Raw[], number];
  upsert: [Raw];
  remove: [Raw];
  /** The state changed (ok ↔ failing, missing). */
  state: [InformerState];
};

/**
 * A Watch that asks for bookmarks and tells its informer when a watch is up or an event came
 * (a class made on first use: the client library is loaded lazily, kube-lib.ts).
 */
function reportingWatch(kc: KubeConfig, owner: KindInformer): Watch {
  class ReportingWatch extends kubeLib().Watch {
    readonly #owner: KindInformer;
    constructor(kc: KubeConfig, owner: KindInformer) {
      super(kc);
      this.#owner = owner;
    }

    override async watch(path: string, query: Record<string, unknown>, cb: (phase: string, obj: unknown, watchObj?: unknown) => void, done: (err: unknown) => void): Promise<AbortController> {
      // A ListWatch that was stopped while listing still goes on to watch: refuse here.
      if (this.#owner.stopped) return new AbortController();
      let failed = false;
      try {
        const c = await super.watch(path, { ...query, allowWatchBookmarks: true }, (phase, obj, w) => {
          this.#owner.sawEvent(phase, obj);
          cb(phase, phase === 'BOOKMARK' || phase === 'ERROR' ? obj : this.#owner.complete(obj as Raw), w);
        }, (err) => {
          failed = !!err;
          done(err);
        });
        if (!failed) this.#owner.healthy();
        return c;
      } catch (err) {
        // Authentication can throw before any request (an unreadable token file): an error like
        // any other, never a rejection nobody handles.
        done(err);
        return new AbortController();
      }
    }
  }
  return new ReportingWatch(kc, owner);
}

export class KindInformer extends EventEmitter<Events> {
  readonly kind: KubeKind;
  state: InformerState = 'syncing';
  /** The last error's message, while failing. */
  lastError: string | undefined;
  /** Whether a first list has completed. */
  synced = false;
  stopped = false;
  readonly #api: KubeApi;
  readonly #log: Logger;
  readonly #opts: InformerOptions;
  readonly #lw: ListWatch<KubernetesObject>;
  #failures = 0;
  #retry: NodeJS.Timeout | undefined;

  constructor(api: KubeApi, kind: KubeKind, log: Logger, opts: InformerOptions = {}) {
    super();
    this.kind = kind;
    this.#api = api;
    this.#opts = opts;
    this.#log = log.child({ kind: kind.kind, apiVersion: groupVersion(kind) });
    const { ListWatch: LW, ADD, UPDATE, DELETE, ERROR } = kubeLib();
    this.#lw = new LW(collectionPath(kind), reportingWatch(api.kc, this), () => this.#list(), false, undefined, opts.fieldSelector);
    this.#lw.on(ADD, (o) => this.#emitIfRunning('upsert', o as Raw));
    this.#lw.on(UPDATE, (o) => this.#emitIfRunning('upsert', o as Raw));
    this.#lw.on(DELETE, (o) => this.#emitIfRunning('remove', o as Raw));
    this.#lw.on(ERROR, (err) => this.#failed(err));
  }

  start(): void {
    this.stopped = false;
    this.#lw.start().catch((err: unknown) => this.#failed(err));
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.#retry);
    void this.#lw.stop();
  }

  /** List items carry no kind or apiVersion for built-in types: put them back. */
  complete(o: Raw): Raw {
    if (o && typeof o === 'object' && (!o.kind || !o.apiVersion)) return { ...o, kind: this.kind.kind, apiVersion: groupVersion(this.kind) };
    return o;
  }

  sawEvent(phase: string, obj: unknown): void {
    if (phase === 'ERROR') {
      const s = obj as { code?: unknown; message?: unknown };
      // 410 Gone is routine: ListWatch relists when the stream ends.
      if (s?.code === 410) this.#log.info({ reason: s.message }, 'watch expired (410 Gone); relisting');
      else this.#log.warn({ code: s?.code, reason: s?.message }, 'the watch stream reported an error');
      return;
    }
    this.healthy();
  }

  healthy(): void {
    if (this.stopped) return;
    this.#failures = 0;
    if (this.state === 'ok') return;
    if (this.state === 'failing') this.#log.info('the Kubernetes API answers again; watching');
    this.state = 'ok';
    this.lastError = undefined;
    this.emit('state', this.state);
  }

  async #list(): Promise<{ metadata: { resourceVersion: string }; items: KubernetesObject[] }> {
    const items: Raw[] = [];
    let cont: string | undefined;
    let resourceVersion = '';
    const startedAt = Date.now();
    const fieldSelector = this.#opts.fieldSelector;
    do {
      const q = new URLSearchParams({ limit: String(this.#opts.pageSize ?? 500), ...(fieldSelector ? { fieldSelector } : {}), ...(cont ? { continue: cont } : {}) });
      const page = (await this.#api.get(`${collectionPath(this.kind)}?${q}`)) as { metadata?: { resourceVersion?: string; continue?: string }; items?: Raw[] };
      for (const it of Array.isArray(page.items) ? page.items : []) items.push(this.complete(it));
      resourceVersion = page.metadata?.resourceVersion ?? '';
      cont = page.metadata?.continue || undefined;
    } while (cont);
    if (!this.stopped) {
      this.synced = true;
      this.healthy();
      this.emit('listed', items, startedAt);
    }
    return { metadata: { resourceVersion }, items: items as KubernetesObject[] };
  }

  #emitIfRunning(ev: 'upsert' | 'remove', o: Raw): void {
    if (!this.stopped) this.emit(ev, this.complete(o));
  }

  /** ListWatch stopped on an error: a 404 means not served; anything else retries with backoff. */
  #failed(err: unknown): void {
    if (this.stopped) return;
    const status = statusOf(err);
    const message = (err as Error)?.message ?? String(err);
    if (status === 404) {
      this.#log.warn({ status }, 'the API no longer serves this kind (CRD removed?); its last good objects stay served until it returns');
      this.stop();
      this.state = 'missing';
      this.emit('state', this.state);
      return;
    }
    const base = this.#opts.backoffMs ?? 1000;
    const delay = Math.min(this.#opts.maxBackoffMs ?? 30_000, base * 2 ** this.#failures) * (0.8 + Math.random() * 0.4);
    this.#failures++;
    const fields = { status, err: message, retryInMs: Math.round(delay) };
    const hint = status === 403 ? `; grant ${this.#opts.account ?? "the control plane's service account"} list and watch on ${this.kind.plural}` : '';
    if (this.state !== 'failing') this.#log.warn(fields, `cannot list or watch ${this.kind.plural}${hint}; serving the last good state and retrying`);
    else this.#log.debug(fields, 'retrying');
    this.lastError = message;
    if (this.state !== 'failing') {
      this.state = 'failing';
      this.emit('state', this.state);
    }
    this.#retry = setTimeout(() => {
      if (!this.stopped) this.#lw.start().catch((e: unknown) => this.#failed(e));
    }, delay);
    this.#retry.unref();
  }
}
