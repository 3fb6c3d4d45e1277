// The source half of the L7 path: a request an app sent to an HTTP port follows the Service's
// routes (state/routes.ts: HTTPRoute and VirtualService compiled), its filters, fault, retry and
// timeout, and goes to an endpoint picked per request: in process to a pod of this node (whose
// destination half authorizes it here), over a pooled HBONE stream to another node, or as plain
// TCP out of the mesh.
import type { DirectResponse, HttpRequestHead, RouteDecision, UpstreamTarget } from '../l7/index.js';
import type { BackendRef, RouteRule, Service, ServiceRoutes, Workload } from '../state/index.js';
import type { ConnectionView } from './connection.js';
import type { ProxyContext } from './context.js';
import { abortResponse, applyFilters, faultOf, matchRoute, noBackendResponse, noRouteResponse, percentHit, pickBackend, selectTable, trafficPolicyFor, type FilterResult, type MirrorTarget } from './http/index.js';
import { appTarget, authorizeRequest, stampTrace } from './http-inbound.js';
import type { HttpLayer } from './http-layer.js';
import { newTraceparent } from './hbone/index.js';
import { peerOf, podIdentity, type LocalPod, type RouteTarget, type SocketAddress } from './types.js';

/** What the source half reads of the mesh: Services, their routes and endpoints. */
export interface HttpMesh {
  service(key: string): Service | undefined;
  routesOf(key: string): ServiceRoutes | undefined;
  endpointsOf(key: string): readonly Workload[];
  /** The Service a request's Host names (a VIP, or name[.ns[.svc[.domain]]] from `namespace`), for telemetry. */
  serviceForHost?(host: string, namespace: string): Service | undefined;
}

/** One endpoint picked for one try; `done` reports how the try went (outlier detection). */
export interface EndpointChoice {
  workload: Workload;
  /** The port the workload serves the Service port on. */
  port: number;
  key: string;
  done(outcome?: number | 'connect-failure'): void;
}

/** Per-request endpoint choice for a Service port (DestinationRule subsets, LB and outlier detection). */
export interface EndpointSource {
  pick(service: string, servicePort: number, sr: ServiceRoutes | undefined, subset?: BackendRef['subset']): EndpointChoice | 'overflow' | undefined;
}

const UNAVAILABLE: DirectResponse = { respond: { status: 503, body: 'no healthy upstream', responseFlags: 'UH' } };
const OVERFLOW: DirectResponse = { respond: { status: 503, body: 'upstream connect error or disconnect/reset before headers. reset reason: overflow', responseFlags: 'UO' } };

/** Where one request goes once a backend is chosen: the Service (key, port) and subset. */
interface Backend {
  service: string;
  port: number;
  subset?: BackendRef['subset'];
}

/**
 * Serves a connection an app in `pod` opened to an HTTP port. `route` is the L4 resolution of
 * its original destination: its Service (when a VIP was dialed) or the workload (a pod IP,
 * which bypasses the Service's routes).
 */
export function serveOutbound(layer: HttpLayer, ctx: ProxyContext, pod: LocalPod, client: import('./relay.js').RelayEnd, view: ConnectionView, route: RouteTarget, orig: SocketAddress): Promise<void> {
  // Backends are picked per request; the connection's own pick is not used.
  route.release?.();
  const svcKey = route.service ? `${route.service.namespace}/${route.service.hostname}` : undefined;
  const source = new SourceHalf(layer, ctx, pod, view);
  const hooks = {
    route: (req: HttpRequestHead): RouteDecision | Promise<RouteDecision> => {
      // The source proxy takes part in the trace (a span of its own, retries under it) and names the request.
      stampTrace(req, true);
      return svcKey ? source.toService(req, svcKey, orig.port) : source.toWorkload(req, route);
    },
    onRequest: source.record,
  };
  return ctx.tracker.session(client, [view], 'outbound', () => layer.engine.serve(client, hooks));
}

class SourceHalf {
  readonly #layer: HttpLayer;
  readonly #ctx: ProxyContext;
  readonly #pod: LocalPod;
  readonly #view: ConnectionView;
  /** Telemetry views by pool key: the record names its upstream, and the views follow from it. */
  readonly #views = new Map<string, ConnectionView[]>();
  readonly #only: ConnectionView[];

  constructor(layer: HttpLayer, ctx: ProxyContext, pod: LocalPod, view: ConnectionView) {
    this.#layer = layer;
    this.#ctx = ctx;
    this.#pod = pod;
    this.#view = view;
    this.#only = [view];
  }

  readonly record = (r: import('../l7/index.js').RequestRecord): void => {
    const t = this.#layer.telemetry;
    if (!t) return;
    t.record(this.#views.get(r.upstream) ?? this.#only, r);
  };

  /** A pod IP dialed directly: no routes, straight to that workload. */
  toWorkload(req: HttpRequestHead, route: RouteTarget): RouteDecision | Promise<RouteDecision> {
    const w = this.#layer.mesh?.workloadByIp(route.addr.ip);
    if (!w) return this.#plain(route.addr);
    return this.#toEndpoint(req, w, route.addr.port, undefined);
  }

  toService(req: HttpRequestHead, svcKey: string, port: number): RouteDecision | Promise<RouteDecision> {
    const mesh = this.#layer.mesh;
    if (!mesh) return UNAVAILABLE;
    const sr = mesh.routesOf(svcKey);
    const table = selectTable(sr, port, this.#pod.namespace);
    if (!table || !sr) return this.#toBackend(req, { service: svcKey, port }, sr, undefined, undefined);
    const m = matchRoute(table, req);
    if (!m) return noRouteResponse();
    const rule = sr.rules[m.rule]!;
    const fault = faultOf(rule.fault, Math.random);
    if (fault) {
      const then = (): RouteDecision | Promise<RouteDecision> => (fault.abort ? abortResponse(fault.abort, req) : this.#routed(req, rule, m, port, sr));
      if (fault.delayMs) return new Promise((resolve) => setTimeout(() => resolve(then()), fault.delayMs).unref());
      return then();
    }
    return this.#routed(req, rule, m, port, sr);
  }

  #routed(req: HttpRequestHead, rule: RouteRule, m: NonNullable<ReturnType<typeof matchRoute>>, port: number, sr: ServiceRoutes): RouteDecision | Promise<RouteDecision> {
    const fctx = { match: m, port };
    let fr = applyFilters(req, rule.filters, fctx);
    if (fr?.redirect) return fr.redirect;
    const b = pickBackend(rule, Math.random);
    if (!b) return noBackendResponse();
    fr = applyFilters(req, b.filters, fctx, fr);
    if (fr?.redirect) return fr.redirect;
    const backendSr = b.service === sr.service ? sr : this.#layer.mesh?.routesOf(b.service);
    return this.#toBackend(req, { service: b.service, port: b.port || port, ...(b.subset ? { subset: b.subset } : {}) }, backendSr, rule, fr);
  }

  #toBackend(req: HttpRequestHead, b: Backend, sr: ServiceRoutes | undefined, rule: RouteRule | undefined, fr: FilterResult | undefined): RouteDecision | Promise<RouteDecision> {
    const endpoints = this.#layer.endpoints;
    const svc = this.#layer.mesh?.service(b.service);
    if (!endpoints || !svc) return { respond: { status: 500, body: `backend service ${b.service} not found`, responseFlags: 'NC' } };
    const pick = (): RouteDecision | Promise<RouteDecision> => {
      const ep = endpoints.pick(b.service, b.port, sr, b.subset);
      if (ep === 'overflow') return OVERFLOW;
      if (!ep) return UNAVAILABLE;
      return this.#toEndpoint(req, ep.workload, ep.port, ep, svc);
    };
    const first = pick();
    if (!rule && !fr && !sr?.trafficPolicy && !b.subset) return first;
    // Timeouts and response filters go on every try's target; the retry policy on the first.
    const base = (d: RouteDecision): RouteDecision => {
      if ('respond' in d) return d;
      const t: UpstreamTarget = { ...d };
      const timeout = rule?.timeoutMs ?? (rule?.retry ? undefined : rule?.backendTimeoutMs);
      if (timeout) t.timeoutMs = timeout;
      const filter = fr?.onResponse;
      if (filter) {
        const own = d.onResponse;
        t.onResponse = own
          ? (res) => {
              own(res);
              filter(res);
            }
          : filter;
      }
      const pool = sr ? trafficPolicyFor(sr, b.subset?.name)?.connectionPool : undefined;
      if (pool?.maxRequestsPerConnection) t.maxRequestsPerConnection = pool.maxRequestsPerConnection;
      if (pool?.maxConnections) t.maxConnections = pool.maxConnections;
      if (pool?.maxPendingRequests !== undefined) t.maxPending = pool.maxPendingRequests;
      return t;
    };
    const decorate = (d: RouteDecision): RouteDecision => {
      const t = base(d);
      if (!('respond' in t) && fr?.mirrors) {
        const mirrors = this.#mirrors(req, fr.mirrors, b.port);
        if (mirrors.length) t.mirror = mirrors;
      }
      const retry = rule?.retry;
      if ('respond' in t || !retry || retry.attempts <= 0) return t;
      const perTry = retry.perTryTimeoutMs ?? rule.backendTimeoutMs;
      t.retry = {
        attempts: retry.attempts,
        backoffMs: retry.backoffMs,
        codes: retry.codes,
        onConnectFailure: retry.onConnectFailure,
        ...(perTry ? { perTryTimeoutMs: perTry } : {}),
        next: () => {
          const n = pick();
          // The engine asks synchronously; a try that would need a JWT check again reuses the first decision.
          return n instanceof Promise ? t : base(n);
        },
      };
      return t;
    };
    return first instanceof Promise ? first.then(decorate) : decorate(first);
  }

  /** Targets for the mirrors this request is drawn for; a mirror with no endpoint is skipped. */
  #mirrors(req: HttpRequestHead, list: readonly MirrorTarget[], port: number): UpstreamTarget[] {
    const out: UpstreamTarget[] = [];
    const endpoints = this.#layer.endpoints;
    if (!endpoints) return out;
    for (const m of list) {
      if (!percentHit(m.percent, Math.random)) continue;
      const ep = endpoints.pick(m.backend.service, m.backend.port || port, this.#layer.mesh?.routesOf(m.backend.service), m.backend.subset);
      if (!ep || ep === 'overflow') continue;
      // A mirror's answer is dropped, so its endpoint's outcome is not judged either.
      ep.done();
      const d = this.#toEndpoint(req, ep.workload, ep.port, undefined, this.#layer.mesh?.service(m.backend.service));
      // The destination's policy holds for mirrors too: a denied or JWT-pending copy is not sent.
      if (!(d instanceof Promise) && !('respond' in d)) out.push(d);
    }
    return out;
  }

  /** One endpoint: in process on this node, HBONE to a mesh pod elsewhere, or plain TCP. */
  #toEndpoint(req: HttpRequestHead, w: Workload, port: number, ep: EndpointChoice | undefined, svc?: Service): RouteDecision | Promise<RouteDecision> {
    const ctx = this.#ctx;
    const ip = w.addresses[0]!;
    const local = ctx.fastPath ? ctx.localPod(ip) : undefined;
    const report = ep ? (o?: number | 'connect-failure') => ep.done(o) : undefined;
    // Pools are per (Service, endpoint), so each request's record names both.
    const tag = svc ? ` for ${svc.key}` : '';
    const service = svc ? { service: { hostname: svc.hostname, name: svc.name, namespace: svc.namespace } } : {};
    if (local) {
      const target = appTarget(ctx, local, port, this.#pod.ip);
      target.upstream += tag;
      this.#remember(target.upstream, () => {
        const src = { ...this.#view, ...service, destination: { ...peerOf(local), ip: local.ip, port }, securityPolicy: 'mutual_tls' as const };
        return [src, { ...src, reporter: 'destination', direction: 'inbound', pod: `${local.namespace}/${local.name}` }];
      });
      const input = { srcPrincipal: `spiffe://${peerOf(this.#pod).principal}`, srcIp: this.#pod.ip, dstIp: local.ip, dstPort: port };
      const d = authorizeRequest(ctx, this.#layer.authn, local, req, input, withOutcome(target, report));
      // A refused request never reaches the endpoint: its lease ends now, unjudged.
      // The record names the endpoint, so the destination reporter books the refusal too.
      const settle = (x: RouteDecision): RouteDecision => {
        if (!('respond' in x)) return x;
        report?.();
        return { respond: { ...x.respond, upstream: target.upstream } };
      };
      return d instanceof Promise ? d.then(settle) : settle(d);
    }
    if (w.tunnelProtocol === 'HBONE' && ctx.hbone) {
      const dialer = ctx.hbone;
      const addr = { ip, port };
      const target: UpstreamTarget = {
        upstream: `hbone ${podIdentity(this.#pod)} ${ip}:${port}${tag}`,
        open: () => dialer.dial(this.#pod, { addr, identity: w.identity, hbone: true }, this.#pod.ip, newTraceparent()),
      };
      this.#remember(target.upstream, () => [{ ...this.#view, ...service, securityPolicy: 'mutual_tls', destination: { ...(ctx.workloads.byIp(ip) ?? {}), ip, port } }]);
      return withOutcome(target, report);
    }
    return withOutcome(this.#plain({ ip, port }), report);
  }

  #plain(addr: SocketAddress): UpstreamTarget {
    const ctx = this.#ctx;
    const pod = this.#pod;
    return {
      upstream: `tcp ${pod.ip} ${addr.ip}:${addr.port}`,
      open: async () => {
        const up = await ctx.upstream.connect(pod.netnsPath, addr, ctx.timeoutMs);
        ctx.registerOrigin(up, pod);
        return up;
      },
    };
  }

  #remember(key: string, views: () => ConnectionView[]): void {
    if (this.#views.has(key)) return;
    // Bounded by the endpoints this one connection reached.
    if (this.#views.size > 256) this.#views.clear();
    this.#views.set(key, views());
  }
}

/** Ends the endpoint's lease with each try's outcome (outlier detection, in-flight counts). */
function withOutcome(t: UpstreamTarget, report: ((o?: number | 'connect-failure') => void) | undefined): UpstreamTarget {
  return report ? { ...t, onTryEnd: (o) => report(o) } : t;
}
