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

export function isDirect(d: unknown): d is DirectResponse {
  return !!d && typeof d === 'object' && 'respond' in d && !!(d as DirectResponse).respond && typeof (d as DirectResponse).respond.status === 'number';
}

function isTarget(d: unknown): d is UpstreamTarget {
  return !!d && typeof d === 'object' && typeof (d as UpstreamTarget).upstream === 'string' && typeof (d as UpstreamTarget).open === 'function';
}

const count = (v: unknown): boolean => typeof v === 'number' && Number.isInteger(v) && v >= 0;

/** Checks the optional fields of a target; a TypeError names the first one that is wrong. */
function checkTarget(t: UpstreamTarget, at: string): void {
  const r = t.retry;
  if (r !== undefined) {
    if (!r || typeof r !== 'object') throw new TypeError(`${at}.retry must be an object`);
    if (!count(r.attempts)) throw new TypeError(`${at}.retry.attempts must be an integer >= 0, got ${String(r.attempts)}`);
    if (typeof r.backoffMs !== 'number' || !(r.backoffMs >= 0)) throw new TypeError(`${at}.retry.backoffMs must be a number >= 0, got ${String(r.backoffMs)}`);
    if (!Array.isArray(r.codes) || !r.codes.every((c) => Number.isInteger(c))) throw new TypeError(`${at}.retry.codes must be a list of status codes`);
    if (r.perTryTimeoutMs !== undefined && !(typeof r.perTryTimeoutMs === 'number' && r.perTryTimeoutMs > 0)) throw new TypeError(`${at}.retry.perTryTimeoutMs must be a number > 0, got ${String(r.perTryTimeoutMs)}`);
    if (r.next !== undefined && typeof r.next !== 'function') throw new TypeError(`${at}.retry.next must be a function`);
  }
  if (t.maxRequestsPerConnection !== undefined && !count(t.maxRequestsPerConnection)) {
    throw new TypeError(`${at}.maxRequestsPerConnection must be an integer >= 0, got ${String(t.maxRequestsPerConnection)}`);
  }
  if (t.mirror !== undefined) {
    if (!Array.isArray(t.mirror)) throw new TypeError(`${at}.mirror must be a list of targets`);
    t.mirror.forEach((m, i) => {
      if (!isTarget(m)) throw new TypeError(`${at}.mirror[${i}] must be { upstream, open }`);
    });
  }
}

/** A route answer, checked: a direct response or a target, else a TypeError naming what is wrong. */
export function checkDecision(d: unknown, at = 'route()'): DirectResponse | UpstreamTarget {
  if (isDirect(d)) return d;
  if (isTarget(d)) {
    checkTarget(d, at);
    return d;
  }
  throw new TypeError(`${at} must answer { upstream, open } or { respond: { status } }`);
}

function settle(d: RouteDecision, out: RouteOutcome): void {
  let c: DirectResponse | UpstreamTarget;
  try {
    c = checkDecision(d);
  } catch (err) {
    out.failed(err);
    return;
  }
  if (isDirect(c)) out.direct(c);
  else out.upstream(c);
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
export type Outcome = Pick<RequestRecord, 'status' | 'requestBytes' | 'responseBytes' | 'responseFlags' | 'upstream' | 'upgraded' | 'grpcStatus' | 'attempts' | 'policy'>;

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
