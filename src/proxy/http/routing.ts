// Which route a request follows: the table for its Service port and client namespace, then the
// first entry whose match the request meets (Gateway API HTTPRoute / VirtualService semantics).
import type { DirectResponse, HttpRequestHead } from '../../l7/index.js';
import type { HttpMatch, RouteEntry, RouteTable, ServiceRoutes } from '../../state/index.js';
import { fullMatchRegex } from './regex.js';

type PathMatch = NonNullable<HttpMatch['path']>;
type ValueMatch = HttpMatch['headers'][number];

/** The entry a request matched. */
export interface RouteMatch {
  /** Index into ServiceRoutes.rules. */
  rule: number;
  entry: RouteEntry;
  /**
   * For a `PathPrefix` or `Prefix` path match: the prefix of the request path it matched, which
   * ReplacePrefixMatch replaces. `PathPrefix` values lose their trailing `/` (`/foo/` → `/foo`,
   * `/` → ``), as Gateway API compares whole segments.
   */
  prefixMatched?: string;
}

/**
 * The table that applies to a request for `port` of the Service from a client in
 * `clientNamespace`: the consumer table of that namespace if there is one (GAMMA: it replaces the
 * producer's for those clients), else the producer table. A table for port 0 applies to every
 * port (a parentRef without a port), after one for the port itself. Undefined: no routes, the
 * request goes to the addressed Service as it is.
 */
export function selectTable(sr: ServiceRoutes | undefined, port: number, clientNamespace: string): RouteTable | undefined {
  if (!sr) return undefined;
  let consumerAny: RouteTable | undefined;
  let producer: RouteTable | undefined;
  let producerAny: RouteTable | undefined;
  for (const t of sr.tables) {
    if (t.port !== port && t.port !== 0) continue;
    if (t.consumerNamespace !== undefined) {
      if (t.consumerNamespace !== clientNamespace) continue;
      if (t.port === port) return t;
      consumerAny ??= t;
    } else if (t.port === port) producer ??= t;
    else producerAny ??= t;
  }
  return consumerAny ?? producer ?? producerAny;
}

/** The answer when a table exists but no entry matches (Envoy: 404, flag NR). */
export function noRouteResponse(): DirectResponse {
  return { respond: { status: 404, responseFlags: 'NR' } };
}

/** A value match made ready once per table: lower-cased header name, compiled regex. */
interface ValueTest {
  name: string;
  type: ValueMatch['type'];
  value: string;
  re: RegExp | null;
  invert: boolean;
  /** Which request attribute a pseudo-header name stands for; 0 for a plain field. */
  pseudo: 0 | 1 | 2 | 3;
}

interface CompiledEntry {
  result: RouteMatch;
  method: string | undefined;
  path: PathMatch | undefined;
  /** PathPrefix: the value without its trailing `/`s. */
  prefix: string;
  pathRe: RegExp | null;
  headers: ValueTest[];
  query: ValueTest[];
  /** A regex the match depends on cannot be evaluated: the entry matches nothing. */
  never: boolean;
}

const compiled = new WeakMap<RouteTable, CompiledEntry[]>();

const PSEUDO: Readonly<Record<string, 1 | 2 | 3>> = { ':authority': 1, host: 1, ':method': 2, ':path': 3 };

function valueTest(v: ValueMatch, header: boolean): ValueTest {
  const name = header ? v.name.toLowerCase() : v.name;
  return {
    name,
    type: v.type,
    value: v.value,
    re: v.type === 'RegularExpression' ? fullMatchRegex(v.value) : null,
    invert: v.invert === true,
    pseudo: header ? (PSEUDO[name] ?? 0) : 0,
  };
}

function compileEntry(e: RouteEntry): CompiledEntry {
  const m: HttpMatch = e.match;
  const path = m.path;
  const prefix = path?.type === 'PathPrefix' ? path.value.replace(/\/+$/, '') : (path?.value ?? '');
  const pathRe = path?.type === 'RegularExpression' ? fullMatchRegex(path.value) : null;
  const headers = m.headers.map((h) => valueTest(h, true));
  const query = m.queryParams.map((q) => valueTest(q, false));
  const never = (path?.type === 'RegularExpression' && pathRe === null) || [...headers, ...query].some((t) => t.type === 'RegularExpression' && t.re === null);
  const result: RouteMatch = path?.type === 'PathPrefix' || path?.type === 'Prefix' ? { rule: e.rule, entry: e, prefixMatched: prefix } : { rule: e.rule, entry: e };
  return { result: Object.freeze(result), method: m.method, path, prefix, pathRe, headers, query, never };
}

function entriesOf(table: RouteTable): CompiledEntry[] {
  let c = compiled.get(table);
  if (!c) {
    c = table.entries.map(compileEntry);
    compiled.set(table, c);
  }
  return c;
}

/**
 * The first entry of `table` the request matches, in the table's order (the control plane
 * sorted it by precedence). The path is compared without its query string. Route `hostnames`
 * are not compared: for mesh routes the Service already chose the route (GAMMA, GEP-1426:
 * implementations should not infer anything from hostnames), and a client names a Service in
 * many forms (short name, FQDN, VIP). The returned object is shared: do not change it.
 */
export function matchRoute(table: RouteTable, head: HttpRequestHead): RouteMatch | undefined {
  const entries = entriesOf(table);
  const target = head.path;
  const q = target.indexOf('?');
  const path = q < 0 ? target : target.slice(0, q);
  let params: Map<string, string> | undefined;
  for (const c of entries) {
    if (c.never) continue;
    if (c.method !== undefined && c.method !== head.method) continue;
    if (c.path && !pathMatches(c, path)) continue;
    let ok = true;
    for (const t of c.headers) {
      if (!valueMatches(t, headerOf(head, t))) {
        ok = false;
        break;
      }
    }
    if (!ok) continue;
    if (c.query.length > 0) {
      params ??= parseQuery(q < 0 ? '' : target.slice(q + 1));
      for (const t of c.query) {
        if (!valueMatches(t, params.get(t.name))) {
          ok = false;
          break;
        }
      }
      if (!ok) continue;
    }
    return c.result;
  }
  return undefined;
}

function pathMatches(c: CompiledEntry, path: string): boolean {
  const p = c.path!;
  switch (p.type) {
    case 'Exact':
      return path === p.value;
    case 'Prefix':
      return path.startsWith(p.value);
    case 'PathPrefix': {
      // Whole segments: `/foo` takes `/foo`, `/foo/`, `/foo/bar`, never `/foobar`.
      const pre = c.prefix;
      return pre === '' || (path.startsWith(pre) && (path.length === pre.length || path.charCodeAt(pre.length) === 0x2f));
    }
    case 'RegularExpression':
      return c.pathRe!.test(path);
  }
}

/**
 * The value a header test looks at. Repeated fields are joined with `,`, as Envoy's header
 * matcher does (RFC 9110 §5.3: the combined field value), so `Exact` sees `a,b` for two lines.
 */
function headerOf(head: HttpRequestHead, t: ValueTest): string | undefined {
  if (t.pseudo === 1) return head.authority || undefined;
  if (t.pseudo === 2) return head.method;
  if (t.pseudo === 3) return head.path;
  const h = head.headers;
  const name = t.name;
  const n = name.length;
  let v: string | undefined;
  for (let i = 0; i < h.length; i += 2) {
    const k = h[i]!;
    if (k.length === n && (k === name || k.toLowerCase() === name)) v = v === undefined ? h[i + 1]! : `${v},${h[i + 1]!}`;
  }
  return v;
}

function valueMatches(t: ValueTest, v: string | undefined): boolean {
  let hit: boolean;
  if (v === undefined) hit = false;
  else {
    switch (t.type) {
      case 'Present':
        hit = true;
        break;
      case 'Exact':
        hit = v === t.value;
        break;
      case 'Prefix':
        hit = v.startsWith(t.value);
        break;
      case 'RegularExpression':
        hit = t.re!.test(v);
        break;
    }
  }
  return hit !== t.invert;
}

/** Query parameters, first value of each name, percent-decoded (names too); `+` stays `+`, as in Envoy. */
export function parseQuery(query: string): Map<string, string> {
  const out = new Map<string, string>();
  if (query === '') return out;
  let start = 0;
  while (start <= query.length) {
    let end = query.indexOf('&', start);
    if (end < 0) end = query.length;
    if (end > start) {
      const eq = query.indexOf('=', start);
      const hasValue = eq >= 0 && eq < end;
      const name = decode(query.slice(start, hasValue ? eq : end));
      if (!out.has(name)) out.set(name, hasValue ? decode(query.slice(eq + 1, end)) : '');
    }
    start = end + 1;
  }
  return out;
}

function decode(s: string): string {
  if (!s.includes('%')) return s;
  try {
    return decodeURIComponent(s);
  } catch {
    return s; // malformed escapes are compared as sent
  }
}
