// The L7 path of the shared proxy (docs/l7.md): one HTTP engine for the node, serving the
// connections to HTTP ports on both halves. Inbound (plaintext 15006 and HBONE tunnels) it
// authorizes each request for the destination pod and delivers it; outbound (15001) it routes
// each request (http-outbound.ts). Request metrics and the access log are booked here.
import { HttpEngine, type EngineOptions, type RequestRecord, type SessionHooks } from '../l7/index.js';
import type { ConnectionView } from './connection.js';
import type { ProxyContext } from './context.js';
import { appTarget, authorizeRequest, stampTrace, type RequestAuthenticator } from './http-inbound.js';
import type { EndpointSource, HttpMesh } from './http-outbound.js';
import type { Workload } from '../state/index.js';
import type { RelayEnd } from './relay.js';
import { isHttpProtocol, type AuthorizeInput, type LocalPod } from './types.js';

/** Where finished requests are booked: metrics per reporter, and the access log. */
export interface RequestTelemetry {
  /**
   * A finished request, with the view of each reporter of this proxy that saw it: one, or the
   * source's and the destination's when both halves ran here (the same node).
   */
  record(views: readonly ConnectionView[], r: RequestRecord): void;
}

export interface HttpLayerOptions {
  /** Services, routes and endpoints: without it, outbound requests to Services get 503. */
  mesh?: HttpMesh & { workloadByIp(ip: string): Workload | undefined };
  endpoints?: EndpointSource;
  engine?: EngineOptions;
  authn?: RequestAuthenticator;
  telemetry?: RequestTelemetry;
}

export class HttpLayer {
  readonly engine: HttpEngine;
  readonly authn: RequestAuthenticator | undefined;
  readonly telemetry: RequestTelemetry | undefined;
  readonly mesh: HttpLayerOptions['mesh'];
  readonly endpoints: EndpointSource | undefined;

  constructor(o: HttpLayerOptions = {}) {
    this.engine = new HttpEngine(o.engine);
    this.mesh = o.mesh;
    this.endpoints = o.endpoints;
    this.authn = o.authn;
    this.telemetry = o.telemetry;
  }

  /** Whether connections to this port of a pod on this node are served as HTTP. */
  inboundIsHttp(ctx: ProxyContext, pod: LocalPod, port: number): boolean {
    return isHttpProtocol(ctx.router?.portProtocol?.(pod.ip, port));
  }

  /**
   * Serves a connection to an HTTP port of `pod` (plaintext inbound, or an HBONE tunnel):
   * each request is authorized with `input` plus its HTTP attributes, then delivered to the app
   * from the client's address. `view` is the destination reporter's.
   */
  inbound(ctx: ProxyContext, pod: LocalPod, client: RelayEnd, view: ConnectionView, input: AuthorizeInput, onEnd?: () => void): Promise<void> {
    const deliver = appTarget(ctx, pod, input.dstPort, input.srcIp);
    const hooks: SessionHooks = {
      route: (req) => {
        // Forwarded as it came from a mesh source; started here for a client outside the mesh.
        stampTrace(req, false);
        return authorizeRequest(ctx, this.authn, pod, req, input, deliver);
      },
      onRequest: (r) => this.telemetry?.record([this.#serviceView(views, view, pod, r.authority)], r),
    };
    const views = new Map<string, ConnectionView>();
    // Plaintext inbound holds reads until a decision; here the decisions are per request.
    client.resume();
    return ctx.tracker.session(client, [view], 'inbound', () => this.engine.serve(client, hooks), onEnd);
  }

  /**
   * The destination reporter's view for a request, with the Service its Host names (the
   * destination side never saw which VIP the client dialed). One object per Host, so the
   * metrics' label sets are worked out once per connection and Host.
   */
  #serviceView(views: Map<string, ConnectionView>, view: ConnectionView, pod: LocalPod, authority: string): ConnectionView {
    let v = views.get(authority);
    if (v) return v;
    const svc = this.mesh?.serviceForHost?.(authority, pod.namespace);
    v = svc ? { ...view, service: { hostname: svc.hostname, name: svc.name, namespace: svc.namespace } } : view;
    if (views.size < 16) views.set(authority, v);
    return v;
  }

  close(): void {
    this.engine.close();
  }
}
