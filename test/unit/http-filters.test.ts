// Route filters and faults of src/proxy/http: header modifiers, URL rewrites (Gateway API's
// ReplacePrefixMatch table), redirect Locations, response hooks, mirrors, fault rolls, and the
// weighted backend pick.
import { describe, expect, it } from 'vitest';
import { HttpRequestHead, type HttpResponseHead } from '../../src/l7/types.js';
import { abortResponse, applyFilters, faultOf, matchRoute, modifyHeaders, noBackendResponse, pickBackend, rewritePath, trafficPolicyFor, type RouteMatch } from '../../src/proxy/http/index.js';
import type { BackendRef, PathMatchType, RouteFilter, RouteRule, RouteTable, ServiceRoutes } from '../../src/state/routes.js';

function req(path: string, headers: string[] = [], authority = 'svc.ns:8080'): HttpRequestHead {
  return new HttpRequestHead('GET', path, authority, headers, 'HTTP/1.1');
}

/** The match a request gets from a one-entry table with this path match. */
function matched(type: PathMatchType, value: string, path: string): RouteMatch {
  const t: RouteTable = { port: 80, entries: [{ match: { path: { type, value }, headers: [], queryParams: [] }, rule: 0, hostnames: [] }] };
  const m = matchRoute(t, req(path));
  if (!m) throw new Error(`${path} does not match ${type} ${value}`);
  return m;
}

/** A deterministic [0, 1) sequence (mulberry32). */
function seeded(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function backend(service: string, weight: number, filters: RouteFilter[] = []): BackendRef {
  return { service, port: 0, weight, filters };
}

function rule(backends: BackendRef[]): RouteRule {
  return { source: 'test', matches: [], filters: [], backends };
}

describe('RequestHeaderModifier', () => {
  it('removes, then sets (in place, once), then adds, names case-insensitive', () => {
    const r = req('/', ['X-Keep', '1', 'x-set', 'old', 'Accept', '*/*', 'X-SET', 'older', 'x-gone', 'a', 'X-Gone', 'b']);
    applyFilters(r, [{ type: 'RequestHeaderModifier', modifier: { set: [['X-Set', 'new'], ['x-fresh', 'f']], add: [['x-add', '1'], ['accept', 'text/html']], remove: ['X-GONE'] } }], {});
    expect(r.headers).toEqual(['X-Keep', '1', 'x-set', 'new', 'Accept', '*/*', 'x-fresh', 'f', 'x-add', '1', 'accept', 'text/html']);
    expect(r.dirty).toBe(true);
  });

  it('leaves the head untouched (not dirty) for an empty modifier', () => {
    const r = req('/', ['a', '1']);
    applyFilters(r, [{ type: 'RequestHeaderModifier', modifier: { set: [], add: [], remove: [] } }], {});
    expect(r.dirty).toBe(false);
  });

  it('sets the authority when it sets Host', () => {
    const r = req('/', ['x', '1']);
    applyFilters(r, [{ type: 'RequestHeaderModifier', modifier: { set: [['Host', 'other.example']], add: [], remove: [] } }], {});
    expect(r.authority).toBe('other.example');
    expect(r.authorityChanged).toBe(true);
    expect(r.headers).toEqual(['x', '1']);
  });
});

describe('URLRewrite', () => {
  it('replaces the hostname (authority)', () => {
    const r = req('/a');
    applyFilters(r, [{ type: 'URLRewrite', hostname: 'backend.example' }], {});
    expect(r.authority).toBe('backend.example');
    expect(r.path).toBe('/a');
  });

  it('ReplaceFullPath keeps the query string', () => {
    const r = req('/old/path?x=1&y=2');
    applyFilters(r, [{ type: 'URLRewrite', path: { type: 'ReplaceFullPath', value: '/new' } }], {});
    expect(r.path).toBe('/new?x=1&y=2');
  });

  // Gateway API HTTPPathModifier.replacePrefixMatch: request path | prefix match | replacement | result.
  const table: Array<[string, string, string, string]> = [
    ['/foo/bar', '/foo', '/xyz', '/xyz/bar'],
    ['/foo/bar', '/foo', '/xyz/', '/xyz/bar'],
    ['/foo/bar', '/foo/', '/xyz', '/xyz/bar'],
    ['/foo/bar', '/foo/', '/xyz/', '/xyz/bar'],
    ['/foo', '/foo', '/xyz', '/xyz'],
    ['/foo/', '/foo', '/xyz', '/xyz/'],
    ['/foo/bar', '/foo', '', '/bar'],
    ['/foo/', '/foo', '', '/'],
    ['/foo', '/foo', '', '/'],
    ['/foo/', '/foo', '/', '/'],
    ['/foo', '/foo', '/', '/'],
    ['/foo/baz', '/foo', '/bar', '/bar/baz'],
    ['/foo/baz', '/foo', '/', '/baz'],
  ];
  it.each(table)('ReplacePrefixMatch: %s with prefix %s replaced by %j is %s', (path, prefix, value, want) => {
    const r = req(path);
    applyFilters(r, [{ type: 'URLRewrite', path: { type: 'ReplacePrefixMatch', value } }], { match: matched('PathPrefix', prefix, path) });
    expect(r.path).toBe(want);
  });

  it('ReplacePrefixMatch keeps the query string, and the prefix / prepends', () => {
    expect(rewritePath('/foo/baz?q=/foo', { type: 'ReplacePrefixMatch', value: '/bar' }, matched('PathPrefix', '/foo', '/foo/baz'))).toBe('/bar/baz?q=/foo');
    expect(rewritePath('/a/b', { type: 'ReplacePrefixMatch', value: '/v2' }, matched('PathPrefix', '/', '/a/b'))).toBe('/v2/a/b');
  });

  it('after a VirtualService Prefix match replaces the string prefix; after Exact the whole path', () => {
    expect(rewritePath('/foobar', { type: 'ReplacePrefixMatch', value: '/baz' }, matched('Prefix', '/foo', '/foobar'))).toBe('/bazbar');
    expect(rewritePath('/exact?x', { type: 'ReplacePrefixMatch', value: '/other' }, matched('Exact', '/exact', '/exact'))).toBe('/other?x');
  });
});

describe('RequestRedirect', () => {
  const redirect = (r: HttpRequestHead, f: Partial<Extract<RouteFilter, { type: 'RequestRedirect' }>>, port = 8080, match?: RouteMatch) =>
    applyFilters(r, [{ type: 'RequestRedirect', statusCode: 302, ...f }], { port, ...(match ? { match } : {}) })!.redirect!;
  const location = (d: ReturnType<typeof redirect>) => (d.respond.headers as Record<string, string>).location;

  it('keeps the request scheme, host and port by default, and the path with its query', () => {
    const d = redirect(req('/p?q=1', [], 'svc.ns:8080'), {});
    expect(d.respond.status).toBe(302);
    expect(location(d)).toBe('http://svc.ns:8080/p?q=1');
  });

  it('changes the hostname and keeps the Service port', () => {
    expect(location(redirect(req('/p', [], 'svc.ns:8080'), { hostname: 'other.example' }))).toBe('http://other.example:8080/p');
  });

  it('omits the port when it is the scheme default', () => {
    expect(location(redirect(req('/p', [], 'svc.ns'), { hostname: 'other.example', statusCode: 301 }, 80))).toBe('http://other.example/p');
  });

  it('a scheme change takes the new scheme well-known port (dropped), unless a port is given (kept)', () => {
    expect(location(redirect(req('/p', [], 'svc.ns:8080'), { scheme: 'https' }))).toBe('https://svc.ns/p');
    expect(location(redirect(req('/p', [], 'svc.ns:8080'), { scheme: 'https', port: 8443 }))).toBe('https://svc.ns:8443/p');
    expect(location(redirect(req('/p', [], 'svc.ns'), { scheme: 'http', port: 80 }, 443))).toBe('http://svc.ns/p');
    expect(location(redirect(req('/p', [], 'svc.ns'), { port: 9000 }))).toBe('http://svc.ns:9000/p');
  });

  it('uses the status code given (301, 302, 308)', () => {
    for (const code of [301, 302, 308]) expect(redirect(req('/'), { statusCode: code }).respond.status).toBe(code);
  });

  it('applies path modifiers and brackets an IPv6 hostname', () => {
    expect(location(redirect(req('/old/x?y', [], 'svc'), { path: { type: 'ReplaceFullPath', value: '/new' } }, 80))).toBe('http://svc/new?y');
    expect(location(redirect(req('/foo/x', [], 'svc'), { path: { type: 'ReplacePrefixMatch', value: '/bar' } }, 80, matched('PathPrefix', '/foo', '/foo/x')))).toBe('http://svc/bar/x');
    expect(location(redirect(req('/', [], '[fd00::1]:8080'), {}))).toBe('http://[fd00::1]:8080/');
    expect(location(redirect(req('/', [], 'svc'), { hostname: 'fd00::2' }, 80))).toBe('http://[fd00::2]/');
  });

  it('stops the filters that follow', () => {
    const r = req('/p', ['a', '1']);
    const out = applyFilters(r, [{ type: 'RequestRedirect', statusCode: 302 }, { type: 'RequestHeaderModifier', modifier: { set: [], add: [['b', '2']], remove: [] } }], { port: 80 });
    expect(out?.redirect).toBeDefined();
    expect(r.headers).toEqual(['a', '1']);
  });
});

describe('ResponseHeaderModifier and RequestMirror', () => {
  it('gives one onResponse hook that applies the rule and then the backend modifiers', () => {
    const r = req('/');
    let out = applyFilters(r, [{ type: 'ResponseHeaderModifier', modifier: { set: [['x-rule', 'r']], add: [], remove: ['server'] } }], {});
    out = applyFilters(r, [{ type: 'ResponseHeaderModifier', modifier: { set: [['x-rule', 'backend']], add: [['x-b', '1']], remove: [] } }], {}, out);
    const res: HttpResponseHead = { status: 200, headers: ['Server', 'nginx', 'content-type', 'text/plain'] };
    out!.onResponse!(res);
    expect(res.headers).toEqual(['content-type', 'text/plain', 'x-rule', 'backend', 'x-b', '1']);
    expect(r.dirty).toBe(false);
  });

  it('reuses one hook per modifier across requests', () => {
    const f: RouteFilter[] = [{ type: 'ResponseHeaderModifier', modifier: { set: [], add: [['a', '1']], remove: [] } }];
    expect(applyFilters(req('/'), f, {})!.onResponse).toBe(applyFilters(req('/'), f, {})!.onResponse);
  });

  it('lists mirrors with their percent, and nothing when no filter leaves anything', () => {
    const b = backend('ns/shadow', 1);
    const out = applyFilters(req('/'), [{ type: 'RequestMirror', backend: b, percent: 25 }], {});
    expect(out?.mirrors).toEqual([{ backend: b, percent: 25 }]);
    expect(applyFilters(req('/'), [{ type: 'URLRewrite', hostname: 'x' }], {})).toBeUndefined();
  });

  it('modifyHeaders returns the same array when there is nothing to do', () => {
    const h = ['a', '1'];
    expect(modifyHeaders(h, { set: [], add: [], remove: [] })).toBe(h);
  });
});

describe('fault injection', () => {
  const fixed = (...v: number[]) => () => v.shift()!;

  it('delays and aborts by their own percent', () => {
    const f = { delay: { ms: 500, percent: 50 }, abort: { status: 503, percent: 10 } };
    expect(faultOf(f, fixed(0.49, 0.09))).toEqual({ delayMs: 500, abort: { status: 503 } });
    expect(faultOf(f, fixed(0.5, 0.09))).toEqual({ abort: { status: 503 } });
    expect(faultOf(f, fixed(0.49, 0.1))).toEqual({ delayMs: 500 });
    expect(faultOf(f, fixed(0.99, 0.99))).toBeUndefined();
    expect(faultOf(undefined, Math.random)).toBeUndefined();
  });

  it('honours 0, 100 and fractional percents', () => {
    expect(faultOf({ abort: { status: 500, percent: 0 } }, () => 0)).toBeUndefined();
    expect(faultOf({ abort: { status: 500, percent: 100 } }, () => 0.999999)).toEqual({ abort: { status: 500 } });
    expect(faultOf({ abort: { status: 500, percent: 0.5 } }, () => 0.004)).toEqual({ abort: { status: 500 } });
    expect(faultOf({ abort: { status: 500, percent: 0.5 } }, () => 0.006)).toBeUndefined();
  });

  it('hits about its percent of requests', () => {
    const rand = seeded(7);
    let n = 0;
    for (let i = 0; i < 10_000; i++) if (faultOf({ abort: { status: 500, percent: 30 } }, rand)) n++;
    expect(n / 10_000).toBeGreaterThan(0.28);
    expect(n / 10_000).toBeLessThan(0.32);
  });

  it('answers an abort with FI, and a gRPC request with its grpc-status', () => {
    expect(abortResponse({ status: 503 }, req('/'))).toEqual({ respond: { status: 503, body: 'fault filter abort', responseFlags: 'FI' } });
    const grpc = abortResponse({ status: 503, grpcStatus: 14 }, req('/pkg.Svc/Call', ['content-type', 'application/grpc+proto']));
    expect(grpc.respond.status).toBe(200);
    expect(grpc.respond.headers).toMatchObject({ 'grpc-status': '14' });
    expect(grpc.respond.responseFlags).toBe('FI');
    expect(abortResponse({ status: 503, grpcStatus: 14 }, req('/')).respond.status).toBe(503);
  });
});

describe('weighted backends', () => {
  it('splits 70/30 within 2% over 10,000 picks', () => {
    const r = rule([backend('ns/a', 70), backend('ns/b', 30)]);
    const rand = seeded(42);
    const n = { 'ns/a': 0, 'ns/b': 0 } as Record<string, number>;
    for (let i = 0; i < 10_000; i++) n[pickBackend(r, rand)!.service]!++;
    expect(Math.abs(n['ns/a']! / 10_000 - 0.7)).toBeLessThan(0.02);
    expect(Math.abs(n['ns/b']! / 10_000 - 0.3)).toBeLessThan(0.02);
  });

  it('gives weight 0 nothing, and the edges of [0, 1) land on the right backends', () => {
    const r = rule([backend('ns/zero', 0), backend('ns/a', 1), backend('ns/b', 3)]);
    expect(pickBackend(r, () => 0)!.service).toBe('ns/a');
    expect(pickBackend(r, () => 0.2499)!.service).toBe('ns/a');
    expect(pickBackend(r, () => 0.25)!.service).toBe('ns/b');
    expect(pickBackend(r, () => 0.99999999)!.service).toBe('ns/b');
  });

  it('has no backend for an empty rule or all weights 0 (the caller answers 500)', () => {
    expect(pickBackend(rule([]), Math.random)).toBeUndefined();
    expect(pickBackend(rule([backend('ns/a', 0)]), Math.random)).toBeUndefined();
    expect(pickBackend(rule([backend('ns/a', 0), backend('ns/b', 0)]), Math.random)).toBeUndefined();
    expect(pickBackend(rule([backend('ns/a', 5)]), Math.random)!.service).toBe('ns/a');
    expect(noBackendResponse().respond.status).toBe(500);
  });
});

describe('traffic policy per subset', () => {
  const sr: ServiceRoutes = {
    service: 'ns/svc',
    rules: [],
    tables: [],
    trafficPolicy: { loadBalancer: 'RANDOM', connectionPool: { maxRequests: 10 } },
    subsets: [
      { name: 'v1', labels: { version: 'v1' }, trafficPolicy: { loadBalancer: 'LEAST_REQUEST' } },
      { name: 'v2', labels: { version: 'v2' } },
    ],
  };

  it("merges a subset's settings over the Service's, field by field", () => {
    expect(trafficPolicyFor(sr, 'v1')).toEqual({ loadBalancer: 'LEAST_REQUEST', connectionPool: { maxRequests: 10 } });
    expect(trafficPolicyFor(sr, 'v2')).toBe(sr.trafficPolicy);
    expect(trafficPolicyFor(sr)).toBe(sr.trafficPolicy);
    expect(trafficPolicyFor(sr, 'v1')).toBe(trafficPolicyFor(sr, 'v1'));
    expect(trafficPolicyFor(undefined, 'v1')).toBeUndefined();
  });
});
