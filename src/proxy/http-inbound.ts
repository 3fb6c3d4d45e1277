// The destination half of the L7 path: every request to a pod's HTTP port is authorized against
// the pod's own policy (L7 rules, RequestAuthentication JWTs) and then delivered to the app.
// It runs wherever the destination is: on the HBONE tunnel, on plaintext inbound, and in process
// for a same-node request, so no client can route around it.
import type { HttpRequestHead, RouteDecision, UpstreamTarget } from '../l7/index.js';
import type { HttpRequestFacts } from '../state/index.js';
import { applyTraceHeaders, traceHeaders } from '../telemetry/index.js';
import type { ProxyContext } from './context.js';
import { podName } from './context.js';
import type { AuthorizeInput, LocalPod } from './types.js';

/** Envoy's RBAC filter answer. */
export const RBAC_DENIED = { status: 403, body: 'RBAC: access denied', headers: { 'content-type': 'text/plain' }, responseFlags: 'RBAC' } as const;
/** Envoy's jwt_authn answer to a token that does not verify. */
export const JWT_FAILED = { status: 401, body: 'Jwt verification fails', headers: { 'content-type': 'text/plain', 'www-authenticate': 'Bearer realm="nodemesh"' } } as const;

/** What a validated JWT adds to a request, or why it is refused. */
export type JwtOutcome = { principal?: string; claims?: Record<string, unknown>; strip?: string[] } | { error: string; policy?: string };

/** RequestAuthentication for the pods of this node (implemented over jose in rbac/jwt.ts). */
export interface RequestAuthenticator {
  /** Undefined when no RequestAuthentication selects the pod: nothing to verify, nothing async. */
  verify(pod: LocalPod, req: HttpRequestHead): Promise<JwtOutcome> | undefined;
}

/**
 * Gives a request its trace context: `participate` (the source proxy) makes this proxy the
 * parent; otherwise a valid traceparent passes as it came and one is started only when absent.
 * The head is replaced only when something changes (a replaced head is validated again).
 */
export function stampTrace(req: HttpRequestHead, participate: boolean): void {
  const t = traceHeaders(req.headers, { participate });
  if (t.add.length || t.remove.length) req.headers = applyTraceHeaders(req.headers, t);
}

function pathOnly(p: string): string {
  const q = p.indexOf('?');
  return q < 0 ? p : p.slice(0, q);
}

/** The request as authorization sees it. */
export function requestFacts(req: HttpRequestHead, srcIp: string, jwt?: { principal?: string; claims?: Record<string, unknown> }): HttpRequestFacts {
  return {
    method: req.method,
    path: pathOnly(req.path),
    host: req.authority,
    header: (name) => req.header(name),
    remoteIp: srcIp,
    ...(jwt?.principal ? { requestPrincipal: jwt.principal } : {}),
    ...(jwt?.claims ? { claims: jwt.claims } : {}),
  };
}

/**
 * Decides one request for `pod`: `deliver` when policy allows it, else Envoy's 403 (or 401 for
 * a bad token). Without an authorizer (local mode without policy) every request is delivered.
 * Synchronous unless a JWT must be verified.
 */
export function authorizeRequest(ctx: ProxyContext, authn: RequestAuthenticator | undefined, pod: LocalPod, req: HttpRequestHead, input: AuthorizeInput, deliver: UpstreamTarget): RouteDecision | Promise<RouteDecision> {
  const pending = authn?.verify(pod, req);
  if (!pending) return decide(ctx, pod, req, input, deliver, undefined);
  return pending.then((jwt) => {
    if ('error' in jwt) {
      ctx.log.info({ pod: podName(pod), src: input.srcIp, method: req.method, path: req.path, reason: jwt.error }, 'request refused: JWT verification failed');
      return { respond: jwt.policy ? { ...JWT_FAILED, policy: jwt.policy } : JWT_FAILED };
    }
    if (jwt.strip?.length) {
      const drop = new Set(jwt.strip.map((n) => n.toLowerCase()));
      const h = req.headers;
      const kept: string[] = [];
      for (let i = 0; i < h.length; i += 2) if (!drop.has(h[i]!.toLowerCase())) kept.push(h[i]!, h[i + 1]!);
      req.headers = kept;
    }
    return decide(ctx, pod, req, input, deliver, jwt);
  });
}

function decide(ctx: ProxyContext, pod: LocalPod, req: HttpRequestHead, input: AuthorizeInput, deliver: UpstreamTarget, jwt: { principal?: string; claims?: Record<string, unknown> } | undefined): RouteDecision {
  if (!ctx.authorize) return deliver;
  // A throw here is the engine's 500 for this request only: fail closed, never open.
  const d = ctx.authorize({ ...input, http: requestFacts(req, input.srcIp, jwt) });
  if (d.allowed) return deliver;
  ctx.log.info({ pod: podName(pod), src: input.srcIp, principal: input.srcPrincipal, method: req.method, path: req.path, policy: d.policy, reason: d.reason }, 'request denied');
  return { respond: d.policy ? { ...RBAC_DENIED, policy: d.policy } : RBAC_DENIED };
}

/** The app inside `pod` at its own IP, from the client's address, pooled per (app port, client IP). */
export function appTarget(ctx: ProxyContext, pod: LocalPod, port: number, srcIp: string): UpstreamTarget {
  return {
    upstream: `app ${pod.ip}:${port} from ${srcIp}`,
    open: () => ctx.upstream.deliver(pod.netnsPath, { ip: pod.ip, port }, srcIp, ctx.timeoutMs),
  };
}
