// Picks an endpoint of a Service (or a subset of it) for each request, as the DestinationRule
// says: the load balancer, outlier ejection on consecutive 5xx, and the in-flight request limit.
import type { Service, ServiceRoutes, TrafficPolicy, Workload } from '../../state/index.js';
import { trafficPolicyFor } from './backends.js';

/** How a request to an endpoint ended: its response status, or no connection/response at all. */
export type EndpointOutcome = number | 'connect-failure';

/** A DestinationRule subset: endpoints whose labels include all of these. */
export interface SubsetRef {
  name: string;
  labels: Record<string, string>;
}

/** An endpoint as the caller sees it: where to send the request. */
export interface Endpoint {
  /** Unique across pools: `<service>:<port>[/<subset>]@<uid>:<targetPort>`; what report() takes. */
  readonly key: string;
  readonly workload: Workload;
  readonly ip: string;
  /** The port the workload serves the Service port on. */
  readonly port: number;
}

export interface EndpointPickerOptions {
  /** A Service by key (`ns/hostname`), for pick(). */
  service(key: string): Service | undefined;
  /** The workloads behind a Service, in any state (ProxyState.endpointsOf); called when a pool is rebuilt. */
  endpointsOf(serviceKey: string): readonly Workload[];
  /** Milliseconds; ejection times are measured on it (default Date.now). */
  now?: () => number;
  /** [0, 1), for RANDOM and LEAST_REQUEST (default Math.random). */
  rand?: () => number;
}

/** Envoy's default max_ejection_time: repeated ejections grow up to this (or the base time, if longer). */
const MAX_EJECTION_MS = 300_000;

class EndpointState implements Endpoint {
  workload: Workload;
  ip: string;
  inFlight = 0;
  consecutive5xx = 0;
  /** 0 when in service. */
  ejectedUntil = 0;
  timesEjected = 0;
  /** When the last ejection ended: each interval in service since then forgives one ejection. */
  admittedAt = 0;
  /** Still in its pool's endpoint list (a rebuild may have dropped it while requests were out). */
  current = true;

  constructor(
    readonly key: string,
    readonly pool: EndpointPool,
    w: Workload,
    readonly port: number,
  ) {
    this.workload = w;
    this.ip = w.addresses[0]!;
  }
}

/** One request's (or try's) hold on an endpoint: done() once, when it is over. */
export class EndpointLease implements Endpoint {
  #done = false;
  readonly #pool: EndpointPool;
  readonly #ep: EndpointState;

  constructor(pool: EndpointPool, ep: EndpointState) {
    this.#pool = pool;
    this.#ep = ep;
  }

  get key(): string {
    return this.#ep.key;
  }
  get workload(): Workload {
    return this.#ep.workload;
  }
  get ip(): string {
    return this.#ep.ip;
  }
  get port(): number {
    return this.#ep.port;
  }

  /** Ends the request: it leaves the in-flight counts; an outcome also goes to outlier detection. Later calls do nothing. */
  done(outcome?: EndpointOutcome): void {
    if (this.#done) return;
    this.#done = true;
    this.#ep.inFlight--;
    this.#pool.inFlight--;
    if (outcome !== undefined) this.#pool.record(this.#ep, outcome);
  }
}

/**
 * The endpoints of one (Service, port, subset): Envoy's cluster. Its outlier state and in-flight
 * counts belong to it, so a subset and the whole Service count apart, as Istio's clusters do.
 */
export class EndpointPool {
  readonly key: string;
  readonly port: number;
  readonly subsetName: string | undefined;
  /** Requests in flight to this pool (connectionPool.maxRequests). */
  inFlight = 0;
  /** @internal */ service: Service;
  /** @internal */ subsetLabels: Record<string, string> | undefined;
  /** @internal */ policy: TrafficPolicy | undefined;
  /** @internal */ version = -1;
  #all: EndpointState[] = [];
  /** The endpoints not ejected, what picks choose from. */
  #live: EndpointState[] = [];
  #ejected = 0;
  #nextReadmit = Infinity;
  #cursor = 0;
  readonly #now: () => number;
  readonly #rand: () => number;

  constructor(service: Service, port: number, subset: SubsetRef | undefined, now: () => number, rand: () => number) {
    this.service = service;
    this.port = port;
    this.subsetName = subset?.name;
    this.subsetLabels = subset?.labels;
    this.key = `${service.key}:${port}${subset ? `/${subset.name}` : ''}`;
    this.#now = now;
    this.#rand = rand;
  }

  /** The endpoints in service now (ejected ones left out). */
  get endpoints(): readonly Endpoint[] {
    if (this.#ejected > 0) this.#readmit(this.#now());
    return this.#live;
  }

  /** Every endpoint that qualifies, ejected or not. */
  get size(): number {
    return this.#all.length;
  }

  /** connectionPool.maxRequests is reached: the caller answers 503 with flag UO instead of picking. */
  overflow(): boolean {
    const max = this.policy?.connectionPool?.maxRequests;
    return max !== undefined && max > 0 && this.inFlight >= max;
  }

  /** An endpoint for one request, by the policy's algorithm; undefined when none is in service (503 UH). */
  pick(): EndpointLease | undefined {
    if (this.#ejected > 0) this.#readmit(this.#now());
    const live = this.#live;
    const n = live.length;
    if (n === 0) return undefined;
    let ep: EndpointState;
    const lb = this.policy?.loadBalancer ?? 'ROUND_ROBIN';
    if (n === 1) ep = live[0]!;
    else if (lb === 'RANDOM') ep = live[this.#index(n)]!;
    else if (lb === 'LEAST_REQUEST') {
      // Power of two choices (Envoy's default for LEAST_REQUEST): two distinct random endpoints,
      // the one with fewer requests in flight; a tie keeps the first.
      const i = this.#index(n);
      let j = this.#index(n - 1);
      if (j >= i) j++;
      const a = live[i]!;
      const b = live[j]!;
      ep = b.inFlight < a.inFlight ? b : a;
    } else {
      const i = this.#cursor % n;
      this.#cursor = i + 1;
      ep = live[i]!;
    }
    ep.inFlight++;
    this.inFlight++;
    return new EndpointLease(this, ep);
  }

  #index(n: number): number {
    return Math.min(n - 1, Math.floor(this.#rand() * n));
  }

  /** @internal Replaces the endpoint list, keeping the state of endpoints that stay. */
  rebuild(workloads: readonly Workload[], byKey: Map<string, EndpointState>): void {
    const svc = this.service;
    const sp = svc.ports.find((p) => p.servicePort === this.port);
    const next: EndpointState[] = [];
    // As cp-source route() does: no such Service port, no endpoints.
    if (sp) {
      for (const w of workloads) {
        if (w.status !== 'HEALTHY' || w.addresses.length === 0) continue;
        if (this.subsetLabels && !hasLabels(w.labels, this.subsetLabels)) continue;
        const port = w.services[svc.key]?.find((p) => p.servicePort === this.port)?.targetPort || sp.targetPort || this.port;
        const key = `${this.key}@${w.uid}:${port}`;
        let ep = byKey.get(key);
        if (ep && ep.pool === this) {
          ep.workload = w;
          ep.ip = w.addresses[0]!;
        } else {
          ep = new EndpointState(key, this, w, port);
          byKey.set(key, ep);
        }
        next.push(ep);
      }
    }
    const kept = new Set(next);
    for (const ep of this.#all) {
      if (kept.has(ep)) continue;
      ep.current = false;
      if (byKey.get(ep.key) === ep) byKey.delete(ep.key);
    }
    this.#all = next;
    this.#relist();
  }

  /** @internal Drops every endpoint (the pool is forgotten). */
  clear(byKey: Map<string, EndpointState>): void {
    this.rebuild([], byKey);
  }

  /** @internal Outlier detection on one outcome. */
  record(ep: EndpointState, outcome: EndpointOutcome): void {
    const failed = outcome === 'connect-failure' || (outcome >= 500 && outcome <= 599);
    if (!failed) {
      ep.consecutive5xx = 0;
      return;
    }
    const od = this.policy?.outlierDetection;
    if (!od || od.consecutive5xxErrors <= 0) return;
    if (++ep.consecutive5xx < od.consecutive5xxErrors) return;
    ep.consecutive5xx = 0;
    if (!ep.current) return;
    const now = this.#now();
    if (this.#ejected > 0) this.#readmit(now);
    if (ep.ejectedUntil !== 0) return;
    // Envoy's rule (DetectorImpl::ejectHost): eject while the share already ejected is below
    // maxEjectionPercent. The first ejection always passes when the percent is above 0, however
    // small the pool ("at least one host"); 0 ejects nothing.
    if ((100 * this.#ejected) / this.#all.length >= od.maxEjectionPercent) return;
    if (ep.timesEjected > 0 && od.intervalMs > 0) {
      ep.timesEjected = Math.max(0, ep.timesEjected - Math.floor((now - ep.admittedAt) / od.intervalMs));
    }
    ep.timesEjected++;
    const ms = Math.min(od.baseEjectionTimeMs * ep.timesEjected, Math.max(MAX_EJECTION_MS, od.baseEjectionTimeMs));
    ep.ejectedUntil = now + ms;
    this.#relist();
  }

  /** Brings back endpoints whose ejection time is over. */
  #readmit(now: number): void {
    if (now < this.#nextReadmit) return;
    for (const ep of this.#all) {
      if (ep.ejectedUntil !== 0 && ep.ejectedUntil <= now) {
        ep.admittedAt = ep.ejectedUntil;
        ep.ejectedUntil = 0;
      }
    }
    this.#relist();
  }

  #relist(): void {
    let ejected = 0;
    let next = Infinity;
    for (const ep of this.#all) {
      if (ep.ejectedUntil === 0) continue;
      ejected++;
      if (ep.ejectedUntil < next) next = ep.ejectedUntil;
    }
    this.#ejected = ejected;
    this.#nextReadmit = next;
    this.#live = ejected === 0 ? this.#all : this.#all.filter((ep) => ep.ejectedUntil === 0);
  }
}

function hasLabels(have: Record<string, string> | undefined, want: Record<string, string>): boolean {
  for (const k in want) if (have?.[k] !== want[k]) return false;
  return true;
}

/**
 * Endpoint pools per (Service, port, subset), built from the state on first use and rebuilt
 * after invalidate(): a pick costs no scan of the state, only the choice among endpoints.
 */
export class EndpointPicker {
  readonly #service: (key: string) => Service | undefined;
  readonly #endpointsOf: (serviceKey: string) => readonly Workload[];
  readonly #now: () => number;
  readonly #rand: () => number;
  readonly #pools = new Map<string, EndpointPool[]>();
  readonly #byKey = new Map<string, EndpointState>();
  #version = 0;

  constructor(o: EndpointPickerOptions) {
    this.#service = o.service;
    this.#endpointsOf = o.endpointsOf;
    this.#now = o.now ?? Date.now;
    this.#rand = o.rand ?? Math.random;
  }

  /**
   * The pool for requests to `port` of `service` (a subset of it), under `policy` (see
   * trafficPolicyFor). Cheap per request: a lookup, and a rebuild only when the state changed
   * since (invalidate), the Service object or the subset's labels object is another one.
   */
  pool(service: Service, port: number, subset?: SubsetRef, policy?: TrafficPolicy): EndpointPool {
    let list = this.#pools.get(service.key);
    if (!list) {
      list = [];
      this.#pools.set(service.key, list);
    }
    const name = subset?.name;
    let pool: EndpointPool | undefined;
    for (const p of list) {
      if (p.port === port && p.subsetName === name) {
        pool = p;
        break;
      }
    }
    if (!pool) {
      pool = new EndpointPool(service, port, subset, this.#now, this.#rand);
      list.push(pool);
    }
    pool.policy = policy;
    if (pool.version !== this.#version || pool.service !== service || pool.subsetLabels !== subset?.labels) {
      pool.service = service;
      pool.subsetLabels = subset?.labels;
      pool.version = this.#version;
      pool.rebuild(this.#endpointsOf(service.key), this.#byKey);
    }
    return pool;
  }

  /**
   * One request's endpoint for `servicePort` of the Service `serviceKey` (a subset of it), under
   * the DestinationRule policy in `sr`: 'overflow' when connectionPool.maxRequests are in flight
   * (503 UO), undefined when the Service is unknown or no endpoint is in service (503 UH).
   */
  pick(serviceKey: string, servicePort: number, sr: ServiceRoutes | undefined, subset?: SubsetRef): EndpointLease | 'overflow' | undefined {
    const svc = this.#service(serviceKey);
    if (!svc) return undefined;
    const pool = this.pool(svc, servicePort, subset, trafficPolicyFor(sr, subset?.name));
    return pool.overflow() ? 'overflow' : pool.pick();
  }

  /** The state changed (workloads, services or routes): every pool rebuilds on its next use. */
  invalidate(): void {
    this.#version++;
  }

  /** An outcome for an endpoint by key (a lease's done() does this itself). Unknown keys are ignored. */
  report(endpointKey: string, outcome: EndpointOutcome): void {
    const ep = this.#byKey.get(endpointKey);
    if (ep) ep.pool.record(ep, outcome);
  }

  /** Drops a Service's pools (it left the state). */
  forget(serviceKey: string): void {
    for (const p of this.#pools.get(serviceKey) ?? []) p.clear(this.#byKey);
    this.#pools.delete(serviceKey);
  }
}
