// Route filters on a request before it goes upstream: header changes, URL rewrites, redirects,
// response header changes and mirrors (Gateway API HTTPRoute filters, VirtualService's
// headers/rewrite/redirect/mirror), and VirtualService fault injection.
import type { DirectResponse, HttpRequestHead, HttpResponseHead } from '../../l7/index.js';
import type { BackendRef, FaultPolicy, RouteFilter } from '../../state/index.js';
import type { RouteMatch } from './routing.js';

type HeaderModifier = Extract<RouteFilter, { type: 'RequestHeaderModifier' }>['modifier'];
type PathModifier = NonNullable<Extract<RouteFilter, { type: 'URLRewrite' }>['path']>;

/** A copy of the request for `backend`, sent for `percent` (0-100) of requests; its answer is dropped. */
export interface MirrorTarget {
  backend: BackendRef;
  percent: number;
}

/** What filters left for the caller beyond their changes to the request head. */
export interface FilterResult {
  /** A RequestRedirect: answer this and send nothing upstream. */
  redirect?: DirectResponse;
  /** ResponseHeaderModifiers, for UpstreamTarget.onResponse. */
  onResponse?: (res: HttpResponseHead) => void;
  mirrors?: MirrorTarget[];
}

export interface FilterContext {
  /** The route the request matched: ReplacePrefixMatch replaces its prefix. */
  match?: RouteMatch;
  /** The Service port the request was sent to: a redirect's port when neither it nor its scheme says one. */
  port?: number;
  /** The request's scheme (default `http`: the mesh terminates plaintext HTTP). */
  scheme?: string;
}

const DEFAULT_PORTS: Readonly<Record<string, number>> = { http: 80, https: 443 };

/**
 * Applies `filters` in order to `head` (a rule's, then the chosen backend's: call twice, passing
 * the first result as `into`). Stops at a RequestRedirect. Returns `into` (or a new result) when
 * a filter left something for the caller, else undefined.
 */
export function applyFilters(head: HttpRequestHead, filters: readonly RouteFilter[], ctx: FilterContext, into?: FilterResult): FilterResult | undefined {
  let out = into;
  for (const f of filters) {
    switch (f.type) {
      case 'RequestHeaderModifier':
        modifyRequestHeaders(head, f.modifier);
        break;
      case 'URLRewrite':
        if (f.hostname) head.authority = f.hostname;
        if (f.path) head.path = rewritePath(head.path, f.path, ctx.match);
        break;
      case 'RequestRedirect':
        out ??= {};
        out.redirect = redirectResponse(head, f, ctx);
        return out;
      case 'ResponseHeaderModifier': {
        out ??= {};
        const hook = responseHook(f.modifier);
        const prev = out.onResponse;
        out.onResponse = prev
          ? (res) => {
              prev(res);
              hook(res);
            }
          : hook;
        break;
      }
      case 'RequestMirror':
        out ??= {};
        (out.mirrors ??= []).push({ backend: f.backend, percent: f.percent });
        break;
    }
  }
  return out;
}

/**
 * `headers` after a modifier, as a new array (or the same one when nothing applies): first
 * `remove`, then `set` (the first field of the name keeps its place and takes the value, later
 * ones go), then `add` (a new line each), names compared case-insensitively. Envoy removes before
 * it adds, so a name in both `remove` and `add` ends up added.
 */
export function modifyHeaders(headers: readonly string[], m: HeaderModifier): readonly string[] {
  if (m.remove.length === 0 && m.set.length === 0 && m.add.length === 0) return headers;
  const h = headers.slice();
  if (m.remove.length > 0) {
    const gone = new Set(m.remove.map((n) => n.toLowerCase()));
    let w = 0;
    for (let i = 0; i < h.length; i += 2) {
      if (gone.has(h[i]!.toLowerCase())) continue;
      h[w++] = h[i]!;
      h[w++] = h[i + 1]!;
    }
    h.length = w;
  }
  for (const [name, value] of m.set) {
    const lower = name.toLowerCase();
    let found = -1;
    let w = 0;
    for (let i = 0; i < h.length; i += 2) {
      if (h[i]!.toLowerCase() === lower) {
        if (found >= 0) continue;
        found = w;
        h[w++] = h[i]!;
        h[w++] = value;
      } else {
        h[w++] = h[i]!;
        h[w++] = h[i + 1]!;
      }
    }
    h.length = w;
    if (found < 0) h.push(name, value);
  }
  for (const [name, value] of m.add) h.push(name, value);
  return h;
}

/** `set` of Host (or :authority) changes the authority, which the upstream's Host follows. */
function modifyRequestHeaders(head: HttpRequestHead, m: HeaderModifier): void {
  let mod = m;
  const host = m.set.findLast(([n]) => isHost(n));
  if (host) {
    head.authority = host[1];
    mod = { ...m, set: m.set.filter(([n]) => !isHost(n)) };
  }
  const next = modifyHeaders(head.headers, mod);
  if (next !== head.headers) head.headers = next;
}

function isHost(name: string): boolean {
  const l = name.toLowerCase();
  return l === 'host' || l === ':authority';
}

const hooks = new WeakMap<HeaderModifier, (res: HttpResponseHead) => void>();

/** One hook per modifier object, made once: a route's hook is shared by all its requests. */
function responseHook(m: HeaderModifier): (res: HttpResponseHead) => void {
  let hook = hooks.get(m);
  if (!hook) {
    hook = (res) => {
      res.headers = modifyHeaders(res.headers, m);
    };
    hooks.set(m, hook);
  }
  return hook;
}

/**
 * The request target after a path modifier; the query string is kept. ReplacePrefixMatch follows
 * the match it came with:
 * - `PathPrefix` (or no path match: Gateway API's default is PathPrefix `/`): whole segments, per
 *   the table in Gateway API's HTTPPathModifier (`/foo` → `/xyz` makes `/foo/bar` `/xyz/bar`;
 *   → `/` or `` makes it `/bar`; `/foo` becomes `/xyz`, `/foo/` `/xyz/`);
 * - `Prefix` (VirtualService): a plain string replacement, as Envoy's prefix_rewrite;
 * - `Exact` or `RegularExpression` (VirtualService rewrite.uri): the whole path is replaced.
 */
export function rewritePath(target: string, mod: PathModifier, match?: RouteMatch): string {
  const q = target.indexOf('?');
  const path = q < 0 ? target : target.slice(0, q);
  const query = q < 0 ? '' : target.slice(q);
  if (mod.type === 'ReplaceFullPath') return (mod.value || '/') + query;
  const type = match?.entry.match.path?.type ?? 'PathPrefix';
  let next: string;
  if (type === 'Prefix' || type === 'PathPrefix') {
    // A backend's rewrite after the rule's may find the prefix gone: then nothing is cut.
    const pre = match?.prefixMatched ?? '';
    const rest = path.startsWith(pre) ? path.slice(pre.length) : path;
    next = (type === 'Prefix' ? mod.value : mod.value.replace(/\/+$/, '')) + rest;
  } else {
    next = mod.value;
  }
  if (!next.startsWith('/')) next = `/${next}`;
  return next + query;
}

/**
 * The redirect a RequestRedirect filter answers, `Location` per Gateway API: the scheme is the
 * filter's or the request's; the hostname the filter's or the request's (without its port); the
 * port the filter's, else the redirect scheme's well-known port when the filter changes the
 * scheme, else the port the request was sent to; a port that is its scheme's default (http 80,
 * https 443) is left out. With no hostname at all (HTTP/1.0 without Host) the Location is the
 * path alone, a relative reference (RFC 9110 §10.2.2).
 */
export function redirectResponse(head: HttpRequestHead, f: Extract<RouteFilter, { type: 'RequestRedirect' }>, ctx: FilterContext): DirectResponse {
  const scheme = (f.scheme ?? ctx.scheme ?? 'http').toLowerCase();
  const reqHost = splitAuthority(head.authority);
  let host = f.hostname ?? reqHost.host;
  if (host.includes(':') && !host.startsWith('[')) host = `[${host}]`;
  let port = f.port;
  if (port === undefined) port = f.scheme !== undefined ? (DEFAULT_PORTS[scheme] ?? ctx.port ?? reqHost.port) : (ctx.port ?? reqHost.port);
  const path = f.path ? rewritePath(head.path, f.path, ctx.match) : head.path;
  const showPort = port !== undefined && port !== DEFAULT_PORTS[scheme];
  const location = host === '' ? path : `${scheme}://${host}${showPort ? `:${port}` : ''}${path}`;
  return { respond: { status: f.statusCode, headers: { location } } };
}

/** `host` (IPv6 literals keep their brackets) and the port, if the authority has one. */
function splitAuthority(a: string): { host: string; port?: number } {
  const close = a.lastIndexOf(']');
  const colon = a.lastIndexOf(':');
  if (colon > close) {
    const port = Number(a.slice(colon + 1));
    const host = a.slice(0, colon);
    return Number.isInteger(port) && port > 0 && port <= 65535 ? { host, port } : { host };
  }
  return { host: a };
}

/** What fault injection does to one request; undefined: nothing. */
export interface FaultOutcome {
  delayMs?: number;
  abort?: { status: number; grpcStatus?: number };
}

/** True for `percent` (0-100, fractions allowed) of calls. */
export function percentHit(percent: number, rand: () => number): boolean {
  return percent >= 100 || (percent > 0 && rand() * 100 < percent);
}

/**
 * Rolls a VirtualService fault for one request: the delay and the abort are drawn separately
 * (delay first), as Envoy's fault filter does; both may hit, the delay then comes before the abort.
 */
export function faultOf(fault: FaultPolicy | undefined, rand: () => number): FaultOutcome | undefined {
  if (!fault) return undefined;
  const delay = fault.delay && percentHit(fault.delay.percent, rand) ? fault.delay.ms : undefined;
  const a = fault.abort;
  const abort = a && percentHit(a.percent, rand) ? (a.grpcStatus !== undefined ? { status: a.status, grpcStatus: a.grpcStatus } : { status: a.status }) : undefined;
  if (delay === undefined && abort === undefined) return undefined;
  return { ...(delay !== undefined ? { delayMs: delay } : {}), ...(abort ? { abort } : {}) };
}

/**
 * The answer of an injected abort, flag FI, body as Envoy's. A gRPC request (content-type
 * application/grpc…) with a gRPC status to give gets it the gRPC way: HTTP 200 with
 * `grpc-status` in a headers-only response.
 */
export function abortResponse(abort: NonNullable<FaultOutcome['abort']>, head: HttpRequestHead): DirectResponse {
  if (abort.grpcStatus !== undefined && (head.header('content-type') ?? '').startsWith('application/grpc')) {
    return {
      respond: {
        status: 200,
        headers: { 'content-type': 'application/grpc', 'grpc-status': String(abort.grpcStatus), 'grpc-message': 'fault filter abort' },
        responseFlags: 'FI',
      },
    };
  }
  return { respond: { status: abort.status, body: 'fault filter abort', responseFlags: 'FI' } };
}
