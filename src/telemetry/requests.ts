// Istio's HTTP request metrics (istio_requests_total and the duration and size histograms) for
// both reporters, kept in a bounded series store of our own and rendered by the agent's registry.
import { Counter, type Metric, type Registry } from 'prom-client';
import type { RequestRecord } from '../l7/index.js';
import { TCP_LABELS, tcpLabels, type PeerInfo, type Reporter, type TcpLabels } from './labels.js';

/** Istio's request labels: the TCP set, then what only a request has, in Istio's order. */
export const REQUEST_LABELS = [...TCP_LABELS, 'response_code', 'grpc_response_status'] as const;
export type RequestLabelName = (typeof REQUEST_LABELS)[number];
export type RequestLabels = Record<RequestLabelName, string>;

/**
 * Envoy's default histogram buckets (HistogramSettingsImpl::defaultBuckets). Istio's proxies
 * use them for all three istio_request_* histograms, bytes included, unless a pod overrides
 * them with `sidecar.istio.io/statsHistogramBuckets`; the 1..10^8 ×10 byte buckets of older
 * docs were Mixer's, gone since Istio 1.5.
 */
export const ISTIO_BUCKETS: readonly number[] = [0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000, 600000, 1800000, 3600000];

/**
 * One reporter's view of the connection a request came on: what the labels come from. The
 * proxy's ConnectionView fits as is. Pass the same object for every request of a connection
 * and never change its peers or service: its labels are resolved once and remembered by identity.
 */
export interface RequestView {
  reporter: Reporter;
  source: PeerInfo;
  destination: PeerInfo;
  /** The Service addressed; without one, destination_service falls back to the request's authority (as Istio's Host fallback does). */
  service?: { hostname: string; name: string; namespace: string } | undefined;
  securityPolicy?: 'mutual_tls' | 'none' | 'unknown';
}

/** Fields telemetry reads when the L7 engine's RequestRecord has them (proposed additions to it). */
export interface RequestExtras {
  /** The request was gRPC (content-type application/grpc or application/grpc+*); else inferred from grpcStatus. */
  grpc?: boolean;
  userAgent?: string;
  /** x-request-id as sent upstream. */
  requestId?: string;
  /** The trace id of the traceparent sent upstream (32 hex). */
  traceId?: string;
}

export type RequestFacts = RequestRecord & RequestExtras;

export interface RequestMetricsOptions {
  /** Series kept at most (default 4096); the least recently used one goes when a new one needs room. */
  maxSeries?: number;
  /** destination_service from the authority when the view has no Service (default true, as Istio). */
  hostFallback?: boolean;
}

const B = ISTIO_BUCKETS.length;
/** grpc_response_status values by index: '' (not gRPC, or no response), '0'..'16', and '-1' (Envoy's InvalidCode). */
const GRPC_VALUES = ['', ...Array.from({ length: 17 }, (_, i) => String(i)), '-1'];
const GRPC_INVALID = GRPC_VALUES.length - 1;
const CODES: string[] = Array.from({ length: 1000 }, (_, i) => String(i));

interface Series {
  readonly labels: RequestLabels;
  readonly base: Base;
  readonly flags: string;
  readonly key: number;
  requests: number;
  /** Per-bucket (not cumulative) counts of the three histograms: duration, request bytes, response bytes. */
  readonly counts: Float64Array;
  readonly sums: Float64Array;
  /** Touched since the eviction hand last passed (CLOCK). */
  used: boolean;
}

/** The labels a connection fixes; its series differ by protocol, code, gRPC status and flags. */
interface Base {
  readonly key: string;
  readonly labels: TcpLabels;
  /** Series without response flags, by variant key; the common case, one Map lookup. */
  readonly plain: Map<number, Series>;
  readonly flagged: Map<string, Map<number, Series>>;
  size: number;
  /** False once its last series was evicted: whoever still holds it must look it up again. */
  live: boolean;
}

interface ViewEntry {
  readonly key: string;
  readonly labels: TcpLabels;
  /** Whether destination_service comes from each request's authority. */
  readonly byHost: boolean;
  base: Base | undefined;
  host: string | undefined;
}

export class RequestMetrics {
  readonly #max: number;
  readonly #hostFallback: boolean;
  readonly #views = new WeakMap<object, ViewEntry>();
  readonly #bases = new Map<string, Base>();
  /** Every series, oldest first; the CLOCK hand starts here. */
  readonly #all = new Set<Series>();
  readonly #evictions: Counter;

  constructor(registry: Registry, o: RequestMetricsOptions = {}) {
    const max = o.maxSeries ?? 4096;
    if (!Number.isInteger(max) || max < 1) throw new RangeError(`maxSeries must be a positive integer, got ${max}`);
    this.#max = max;
    this.#hostFallback = o.hostFallback ?? true;
    const all = this.#all;
    const clear = (): void => this.#clear();
    const families = [
      counterFamily('istio_requests_total', 'Requests handled by the proxy, by reporter, peers, response code and flags', all, clear),
      histogramFamily('istio_request_duration_milliseconds', 'Request duration, from the first byte of the request to the end of the response', 0, all, clear),
      histogramFamily('istio_request_bytes', 'Request body sizes', 1, all, clear),
      histogramFamily('istio_response_bytes', 'Response body sizes', 2, all, clear),
    ];
    // The registry renders anything with prom-client's metric shape; these families read our
    // store, so a request costs a few increments instead of prom-client's per-call label hashing.
    for (const f of families) registry.registerMetric(f as unknown as Metric);
    this.#evictions = new Counter({
      name: 'nodemesh_request_series_evictions_total',
      help: 'Request metric series dropped to stay within the series limit (their counters restart from zero if they come back)',
      registers: [registry],
    });
  }

  /** Series held now. */
  get size(): number {
    return this.#all.size;
  }

  /** Counts one finished request as `view`'s reporter saw it. */
  record(view: RequestView, r: RequestFacts): void {
    const base = this.#baseFor(view, r.authority);
    const grpc = r.grpc ?? r.grpcStatus !== undefined;
    const status = Number.isInteger(r.status) && r.status >= 0 && r.status < 1000 ? r.status : 0;
    const g = grpc ? grpcIndex(r.grpcStatus, status) : 0;
    const key = (status * GRPC_VALUES.length + g) * 2 + (grpc ? 1 : 0);
    const flags = r.responseFlags || '-';
    let series = (flags === '-' ? base.plain : base.flagged.get(flags))?.get(key);
    if (series === undefined) series = this.#add(base, flags, key, status, g, grpc);
    else series.used = true;
    series.requests++;
    observe(series, 0, r.durationMs);
    observe(series, 1, r.requestBytes);
    observe(series, 2, r.responseBytes);
  }

  #baseFor(view: RequestView, authority: string): Base {
    let e = this.#views.get(view);
    if (e === undefined) {
      e = this.#entry(view);
      this.#views.set(view, e);
    }
    if (!e.byHost) {
      if (e.base === undefined || !e.base.live) e.base = this.#intern(e.key, e.labels);
      return e.base;
    }
    // Keep-alive connections mostly ask for one authority: remember the last.
    if (e.host === authority && e.base !== undefined && e.base.live) return e.base;
    const host = authority || 'unknown';
    e.host = authority;
    e.base = this.#intern(`${e.key}\u0000${host}`, { ...e.labels, destination_service: host, destination_service_name: host });
    return e.base;
  }

  #entry(view: RequestView): ViewEntry {
    const s = view.service;
    const labels = tcpLabels({
      reporter: view.reporter,
      source: view.source,
      destination: view.destination,
      ...(s ? { destinationService: s.hostname, destinationServiceName: s.name, destinationServiceNamespace: s.namespace } : {}),
      ...(view.securityPolicy ? { securityPolicy: view.securityPolicy } : {}),
    });
    const byHost = !s && this.#hostFallback;
    // Istio reports the destination workload's namespace when there is no Service to name one.
    if (byHost && view.destination.namespace) labels.destination_service_namespace = view.destination.namespace;
    let key = '';
    for (const n of TCP_LABELS) key += `${labels[n]}\u0000`;
    return { key, labels, byHost, base: undefined, host: undefined };
  }

  #intern(key: string, labels: TcpLabels): Base {
    let b = this.#bases.get(key);
    if (b === undefined) {
      b = { key, labels, plain: new Map(), flagged: new Map(), size: 0, live: true };
      this.#bases.set(key, b);
    }
    return b;
  }

  #add(base: Base, flags: string, key: number, status: number, g: number, grpc: boolean): Series {
    if (this.#all.size >= this.#max) this.#evictOne();
    // Eviction may have emptied this very base; bring it back before adding to it.
    if (!base.live) {
      base.live = true;
      this.#bases.set(base.key, base);
    }
    const labels: RequestLabels = {
      ...base.labels,
      request_protocol: grpc ? 'grpc' : 'http',
      response_flags: flags,
      response_code: CODES[status]!,
      grpc_response_status: GRPC_VALUES[g]!,
    };
    const s: Series = { labels, base, flags, key, requests: 0, counts: new Float64Array(3 * B), sums: new Float64Array(3), used: false };
    let m = flags === '-' ? base.plain : base.flagged.get(flags);
    if (m === undefined) base.flagged.set(flags, (m = new Map()));
    m.set(key, s);
    base.size++;
    this.#all.add(s);
    return s;
  }

  /** CLOCK: the oldest series not used since the hand last passed it goes; used ones get a second chance. */
  #evictOne(): void {
    for (;;) {
      const s = this.#all.values().next().value;
      if (s === undefined) return;
      this.#all.delete(s);
      if (s.used) {
        s.used = false;
        this.#all.add(s);
        continue;
      }
      const b = s.base;
      const m = s.flags === '-' ? b.plain : b.flagged.get(s.flags);
      m?.delete(s.key);
      if (m && m.size === 0 && s.flags !== '-') b.flagged.delete(s.flags);
      if (--b.size === 0) {
        b.live = false;
        this.#bases.delete(b.key);
      }
      this.#evictions.inc();
      return;
    }
  }

  #clear(): void {
    for (const b of this.#bases.values()) b.live = false;
    for (const s of this.#all) {
      s.base.plain.clear();
      s.base.flagged.clear();
      s.base.size = 0;
    }
    this.#bases.clear();
    this.#all.clear();
  }
}

function observe(s: Series, h: number, v: number): void {
  const x = Number.isFinite(v) && v > 0 ? v : 0;
  s.sums[h]! += x;
  for (let i = 0; i < B; i++) {
    if (x <= ISTIO_BUCKETS[i]!) {
      s.counts[h * B + i]! += 1;
      return;
    }
  }
  // Above the last bound: counted only in +Inf, which is the series' request count.
}

/**
 * grpc_response_status as Envoy derives it: the grpc-status field if any (a value that is not a
 * number up to 16 is InvalidCode, -1), else mapped from the HTTP status, else '' (no response).
 */
function grpcIndex(v: string | undefined, status: number): number {
  if (v === undefined || v === '') return status === 0 ? 0 : 1 + httpToGrpc(status);
  if (v.length > 8) return GRPC_INVALID;
  let n = 0;
  for (let i = 0; i < v.length; i++) {
    const d = v.charCodeAt(i) - 48;
    if (d < 0 || d > 9) return GRPC_INVALID;
    n = n * 10 + d;
  }
  return n <= 16 ? 1 + n : GRPC_INVALID;
}

/** https://github.com/grpc/grpc/blob/master/doc/http-grpc-status-mapping.md, as Envoy applies it. */
function httpToGrpc(status: number): number {
  switch (status) {
    case 400:
      return 13; // INTERNAL
    case 401:
      return 16; // UNAUTHENTICATED
    case 403:
      return 7; // PERMISSION_DENIED
    case 404:
      return 12; // UNIMPLEMENTED
    case 429:
    case 502:
    case 503:
    case 504:
      return 14; // UNAVAILABLE
    default:
      return 2; // UNKNOWN
  }
}

/** A sample as prom-client's Registry renders it; `sharedLabels` are formatted once per series (its WeakMap cache). */
interface Sample {
  labels: Record<string, string | number>;
  sharedLabels?: RequestLabels;
  value: number;
  metricName?: string;
}

interface Family {
  name: string;
  help: string;
  type: 'counter' | 'histogram';
  aggregator: 'sum';
  get(): Promise<{ name: string; help: string; type: string; aggregator: string; values: Sample[] }>;
  reset(): void;
}

function counterFamily(name: string, help: string, all: ReadonlySet<Series>, reset: () => void): Family {
  const f: Family = {
    name,
    help,
    type: 'counter',
    aggregator: 'sum',
    get: async () => {
      const values: Sample[] = [];
      for (const s of all) values.push({ labels: s.labels, value: s.requests });
      return { name: f.name, help, type: 'counter', aggregator: 'sum', values };
    },
    reset,
  };
  return f;
}

const LE: ReadonlyArray<Record<string, number | string>> = [...ISTIO_BUCKETS.map((le) => ({ le })), { le: '+Inf' }];
const NO_LABELS = {};

function histogramFamily(name: string, help: string, h: number, all: ReadonlySet<Series>, reset: () => void): Family & { getForPromString(): ReturnType<Family['get']> } {
  const bucket = `${name}_bucket`;
  const samples = (splay: boolean): Sample[] => {
    const out: Sample[] = [];
    const push = (s: Series, labels: Record<string, string | number>, value: number, metricName: string): void => {
      out.push(splay ? { labels: { ...s.labels, ...labels }, value, metricName } : { labels, sharedLabels: s.labels, value, metricName });
    };
    for (const s of all) {
      let acc = 0;
      for (let i = 0; i < B; i++) push(s, LE[i]!, (acc += s.counts[h * B + i]!), bucket);
      push(s, LE[B]!, s.requests, bucket);
      push(s, NO_LABELS, s.sums[h]!, `${name}_sum`);
      push(s, NO_LABELS, s.requests, `${name}_count`);
    }
    return out;
  };
  const result = (values: Sample[]) => ({ name, help, type: 'histogram', aggregator: 'sum', values });
  return {
    name,
    help,
    type: 'histogram',
    aggregator: 'sum',
    // Text exposition: the registry formats shared labels once per series object.
    getForPromString: async () => result(samples(false)),
    // JSON (getMetricsAsJSON): every sample carries all its labels.
    get: async () => result(samples(true)),
    reset,
  };
}
