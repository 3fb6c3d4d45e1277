// Calling the caller's hooks the same way from HTTP/1.1 and HTTP/2: route decisions (sync or
// async, checked), the response-head hook, direct answers, and request records. A hook that
// throws is logged and answered, never let out of the engine.
import type { Logger } from '../log.js';
import { flatHeaders } from './head.js';
import type { DirectResponse, HttpRequestHead, HttpResponseHead, RequestRecord, RouteDecision, SessionHooks, UpstreamTarget } from './types.js';

export interface RouteOutcome {
  direct(d: DirectResponse): void;
  upstream(t: UpstreamTarget): void;
  /** The hook threw, rejected, or answered something that is neither. */
  failed(err: unknown): void;
}

function settle(d: RouteDecision, out: RouteOutcome): void {
  if (d && typeof d === 'object' && 'respond' in d && d.respond && typeof d.respond.status === 'number') out.direct(d);
  else if (d && typeof d === 'object' && typeof (d as UpstreamTarget).upstream === 'string' && typeof (d as UpstreamTarget).open === 'function') out.upstream(d as UpstreamTarget);
  else out.failed(new TypeError('route() must answer { upstream, open } or { respond: { status } }'));
}

/** Runs the route hook; a synchronous answer is acted on at once, without a promise. */
export function route(hooks: SessionHooks, req: HttpRequestHead, out: RouteOutcome): void {
  let d: RouteDecision | Promise<RouteDecision>;
  try {
    d = hooks.route(req);
  } catch (err) {
    out.failed(err);
    return;
  }
  if (d !== null && typeof d === 'object' && typeof (d as Promise<RouteDecision>).then === 'function') {
    (d as Promise<RouteDecision>).then(
      (x) => settle(x, out),
      (err: unknown) => out.failed(err),
    );
  } else settle(d as RouteDecision, out);
}

/** A direct answer's parts: raw header pairs and the body bytes. */
export function directParts(d: DirectResponse): { status: number; headers: string[]; body: Buffer; flags: string } {
  const r = d.respond;
  const body = r.body === undefined ? Buffer.alloc(0) : typeof r.body === 'string' ? Buffer.from(r.body) : r.body;
  return { status: r.status, headers: flatHeaders(r.headers), body, flags: r.responseFlags ?? '-' };
}

/**
 * Lets the route's response hook see (and replace) the head. `changed` says the fields are no
 * longer llhttp's, so whoever writes them must validate them.
 */
export function responseHook(t: UpstreamTarget | undefined, status: number, headers: readonly string[], log: Logger): { headers: readonly string[]; changed: boolean } {
  const hook = t?.onResponse;
  if (!hook) return { headers, changed: false };
  const res: HttpResponseHead = { status, headers };
  try {
    hook(res);
  } catch (err) {
    log.error({ err }, 'the response hook failed; the response goes on unchanged');
    return { headers, changed: false };
  }
  return { headers: res.headers, changed: res.headers !== headers };
}

/** What a finished request adds to its head for the record. */
export type Outcome = Pick<RequestRecord, 'status' | 'requestBytes' | 'responseBytes' | 'responseFlags' | 'upstream' | 'upgraded' | 'grpcStatus'>;

/** Books a finished request (started at `t0`, performance.now()) through the telemetry hook. */
export function report(hooks: SessionHooks, log: Logger, req: HttpRequestHead, t0: number, o: Outcome): void {
  const onRequest = hooks.onRequest;
  if (!onRequest) return;
  try {
    onRequest({ protocol: req.protocol, method: req.method, path: req.path, authority: req.authority, durationMs: performance.now() - t0, ...o });
  } catch (err) {
    log.error({ err }, 'the request telemetry hook failed');
  }
}

export function logRouteFailure(log: Logger, req: HttpRequestHead, err: unknown): void {
  log.error({ err, method: req.method, path: req.path }, 'the route hook failed; answering 500');
}
