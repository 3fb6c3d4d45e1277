// HTTPRoute (GAMMA) → ServiceRoutes: attachment to Service ports, producer and consumer tables,
// backends, filters, timeouts and retries, and the spec's precedence across routes.
import { describe, expect, it } from 'vitest';
import { UNRESOLVED_SUFFIX } from '../../src/controlplane/routes.js';
import { API, compile, lineOf, order, problemLines, routesFor, tableOf, WEB, WEB_V2 } from '../helpers/routes.js';

const route = (name: string, body: string, opts: { ns?: string; created?: string } = {}) => `apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: ${name}
  namespace: ${opts.ns ?? 'shop'}${opts.created ? `\n  creationTimestamp: "${opts.created}"` : ''}
spec:
${body}`;
const toWeb = (port = '80') => `  parentRefs: [{kind: Service, group: "", name: web${port ? `, port: ${port}` : ''}}]\n`;

describe('HTTPRoute attachment', () => {
  it('attaches to the parentRef port only; without a port to every TCP port; sectionName picks a port by name', () => {
    const onePort = compile(route('r', `${toWeb()}  rules: [{backendRefs: [{name: web-v2, port: 80}]}]\n`));
    expect(routesFor(onePort, WEB).tables.map((t) => t.port)).toEqual([80]);
    const all = compile(route('r', `${toWeb('')}  rules: [{backendRefs: [{name: web-v2, port: 80}]}]\n`));
    expect(routesFor(all, WEB).tables.map((t) => t.port)).toEqual([80, 9000]);
    // Both tables hold the same rule, stored once.
    expect(routesFor(all, WEB).rules).toHaveLength(1);
    const named = compile(route('r', `  parentRefs: [{kind: Service, group: "", name: web, sectionName: admin}]\n  rules: [{backendRefs: [{name: web, port: 9000}]}]\n`));
    expect(routesFor(named, WEB).tables.map((t) => t.port)).toEqual([9000]);
    expect(onePort.problems).toEqual([]);
  });

  it('makes a producer table in the Service namespace and a consumer table for a route elsewhere', () => {
    const c = compile(
      `${route('producer', `${toWeb()}  rules: [{backendRefs: [{name: web, port: 80}]}]\n`)}---\n${route(
        'consumer',
        `  parentRefs: [{kind: Service, group: "", name: web, namespace: shop, port: 80}]\n  rules: [{backendRefs: [{name: web-v2, namespace: shop, port: 80}], timeouts: {request: 100ms}}]\n`,
        { ns: 'fast-clients' },
      )}`,
    );
    const sr = routesFor(c, WEB);
    expect(sr.tables.map((t) => [t.port, t.consumerNamespace])).toEqual([
      [80, undefined],
      [80, 'fast-clients'],
    ]);
    expect(order(c, WEB, 80)).toEqual(['HTTPRoute shop/producer rule 0: PathPrefix /']);
    expect(order(c, WEB, 80, 'fast-clients')).toEqual(['HTTPRoute fast-clients/consumer rule 0: PathPrefix /']);
    // The consumer route's backend in the Service's namespace needs no ReferenceGrant (GEP-1294).
    const consumerRule = sr.rules[tableOf(c, WEB, 80, 'fast-clients').entries[0]!.rule]!;
    expect(consumerRule).toMatchObject({ backends: [{ service: WEB_V2, port: 80, weight: 1 }], timeoutMs: 100 });
    expect(c.problems).toEqual([]);
  });

  it('refuses cross-namespace backends when told to, naming the missing ReferenceGrant', () => {
    const yaml = route('r', `${toWeb()}  rules: [{backendRefs: [{name: api, namespace: team-b, port: 8080}]}]\n`);
    expect(routesFor(compile(yaml), WEB).rules[0]!.backends[0]!.service).toBe(API);
    const c = compile(yaml, { crossNamespaceBackends: 'refuse' });
    expect(routesFor(c, WEB).rules[0]!.backends[0]).toMatchObject({ service: `team-b/api${UNRESOLVED_SUFFIX}`, port: 8080, weight: 1 });
    expect(problemLines(c)).toEqual([`error ${lineOf(c.text, 'backendRefs: [{name: api')} HTTPRoute shop/r: spec.rules[0].backendRefs[0]: Service team-b/api is in another namespace, which needs a ReferenceGrant, and ReferenceGrants are not read; requests sent to it get 500`]);
  });

  it('reports a parent Service that does not exist, a port it lacks and a headless one; Gateway parents are not ours', () => {
    const c = compile(
      route(
        'r',
        `  parentRefs:\n    - {kind: Service, group: "", name: nope}\n    - {kind: Service, group: "", name: web, port: 81}\n    - {kind: Service, group: "", name: db}\n    - {kind: Gateway, name: gw}\n  rules: [{backendRefs: [{name: web, port: 80}]}]\n`,
      ),
    );
    expect(c.routes).toEqual([]);
    expect(problemLines(c)).toEqual([
      `error ${lineOf(c.text, 'name: nope}')} HTTPRoute shop/r: spec.parentRefs[0]: Service shop/nope does not exist; the route is not attached to it`,
      `error ${lineOf(c.text, 'port: 81}')} HTTPRoute shop/r: spec.parentRefs[1]: Service shop/web has no TCP port 81; the route is not attached to it`,
      `warning ${lineOf(c.text, 'name: db}')} HTTPRoute shop/r: spec.parentRefs[2]: Service shop/db is headless (no cluster IP), which cannot be a route parent (GEP-1294); the route is not attached to it`,
    ]);
    const gatewayOnly = compile(route('r', `  parentRefs: [{name: gw}]\n  hostnames: [example.com]\n  rules: [{backendRefs: [{name: web, port: 80}]}]\n`));
    expect(gatewayOnly).toMatchObject({ routes: [], problems: [] });
  });

  it('ignores hostnames for Service parents, with a warning', () => {
    const c = compile(route('r', `${toWeb()}  hostnames: [web.example.com]\n  rules: [{backendRefs: [{name: web, port: 80}]}]\n`));
    expect(tableOf(c, WEB, 80).entries[0]!.hostnames).toEqual([]);
    expect(c.problems).toMatchObject([{ severity: 'warning', code: 'NM_ERR_POLICY', message: expect.stringMatching(/spec\.hostnames: hostnames are ignored for Service parents/) }]);
  });
});

describe('HTTPRoute backends', () => {
  it('keeps weights (default 1, 0 gets nothing) and gives unresolvable backends a key that names no Service', () => {
    const c = compile(
      route(
        'r',
        `${toWeb()}  rules:\n    - backendRefs:\n        - {name: web, port: 80, weight: 90}\n        - {name: web-v2, port: 80}\n        - {name: web-v2, port: 80, weight: 0}\n        - {name: ghost, port: 80, weight: 5}\n        - {name: web-v2, port: 8080}\n        - {name: imported, kind: ServiceImport, group: multicluster.x-k8s.io, port: 80}\n`,
      ),
    );
    expect(routesFor(c, WEB).rules[0]!.backends.map((b) => [b.service, b.port, b.weight])).toEqual([
      [WEB, 80, 90],
      [WEB_V2, 80, 1],
      [WEB_V2, 80, 0],
      ['shop/ghost.invalid', 80, 5],
      ['shop/web-v2.invalid', 8080, 1],
      ['shop/imported.invalid', 80, 1],
    ]);
    expect(problemLines(c)).toEqual([
      `error ${lineOf(c.text, 'name: ghost')} HTTPRoute shop/r: spec.rules[0].backendRefs[3]: backend Service shop/ghost does not exist; requests sent to it get 500`,
      `error ${lineOf(c.text, 'port: 8080}')} HTTPRoute shop/r: spec.rules[0].backendRefs[4]: backend Service shop/web-v2 has no TCP port 8080; requests sent to it get 500`,
      `error ${lineOf(c.text, 'kind: ServiceImport')} HTTPRoute shop/r: spec.rules[0].backendRefs[5]: backend kind multicluster.x-k8s.io/ServiceImport is not supported, only Service; requests sent to it get 500`,
    ]);
  });

  it('a rule without backendRefs keeps no backends (the proxy answers 500), and no rules means one such rule for every request', () => {
    const c = compile(route('r', `${toWeb()}  rules: [{matches: [{path: {type: Exact, value: /gone}}]}]\n`));
    expect(routesFor(c, WEB).rules[0]).toMatchObject({ backends: [], filters: [] });
    const none = compile(route('r', toWeb()));
    expect(routesFor(none, WEB).rules).toMatchObject([{ matches: [{ path: { type: 'PathPrefix', value: '/' } }], backends: [] }]);
  });
});

describe('HTTPRoute matches', () => {
  it('compiles every match type; a match without a path is PathPrefix /, a rule without matches one such match', () => {
    const c = compile(
      route(
        'r',
        `${toWeb()}  rules:\n    - matches:\n        - path: {type: Exact, value: /a}\n        - path: {type: PathPrefix, value: /b}\n        - path: {type: RegularExpression, value: "/c/[0-9]+"}\n        - method: POST\n          headers: [{name: X-Env, value: prod}, {name: x-env, value: dev}, {name: x-re, type: RegularExpression, value: "v[12]"}]\n          queryParams: [{name: q, value: "1"}, {name: q, value: "2"}, {name: Q, type: RegularExpression, value: "x.*"}]\n      backendRefs: [{name: web, port: 80}]\n    - backendRefs: [{name: web-v2, port: 80}]\n`,
      ),
    );
    const rules = routesFor(c, WEB).rules;
    const r0 = rules.find((r) => r.source === 'HTTPRoute shop/r rule 0')!;
    expect(r0.matches).toEqual([
      { path: { type: 'Exact', value: '/a' }, headers: [], queryParams: [] },
      { path: { type: 'PathPrefix', value: '/b' }, headers: [], queryParams: [] },
      { path: { type: 'RegularExpression', value: '/c/[0-9]+' }, headers: [], queryParams: [] },
      {
        path: { type: 'PathPrefix', value: '/' },
        method: 'POST',
        // Header names are case-insensitive and query names exact: only the first of a name counts.
        headers: [
          { name: 'X-Env', type: 'Exact', value: 'prod' },
          { name: 'x-re', type: 'RegularExpression', value: 'v[12]' },
        ],
        queryParams: [
          { name: 'q', type: 'Exact', value: '1' },
          { name: 'Q', type: 'RegularExpression', value: 'x.*' },
        ],
      },
    ]);
    expect(rules.find((r) => r.source === 'HTTPRoute shop/r rule 1')!.matches).toEqual([{ path: { type: 'PathPrefix', value: '/' }, headers: [], queryParams: [] }]);
  });
});

describe('HTTPRoute precedence across the routes of a port', () => {
  it('orders Exact, then longer prefixes, then method, header count, query count; regex after prefixes (as istiod)', () => {
    const c = compile(
      route(
        'r',
        `${toWeb()}  rules:\n    - matches:\n        - path: {type: PathPrefix, value: /}\n        - path: {type: RegularExpression, value: "/x.*"}\n        - path: {type: PathPrefix, value: /api}\n        - path: {type: PathPrefix, value: /api/v1}\n        - path: {type: PathPrefix, value: /api}\n          method: GET\n        - path: {type: PathPrefix, value: /api}\n          headers: [{name: a, value: "1"}]\n        - path: {type: PathPrefix, value: /api}\n          headers: [{name: a, value: "1"}, {name: b, value: "2"}]\n        - path: {type: PathPrefix, value: /api}\n          queryParams: [{name: a, value: "1"}]\n        - path: {type: Exact, value: /api}\n      backendRefs: [{name: web, port: 80}]\n`,
      ),
    );
    const entries = tableOf(c, WEB, 80).entries.map((e) => [e.match.path!.type, e.match.path!.value, e.match.method ?? '', e.match.headers.length, e.match.queryParams.length]);
    expect(entries).toEqual([
      ['Exact', '/api', '', 0, 0],
      ['PathPrefix', '/api/v1', '', 0, 0],
      ['PathPrefix', '/api', 'GET', 0, 0],
      ['PathPrefix', '/api', '', 2, 0],
      ['PathPrefix', '/api', '', 1, 0],
      ['PathPrefix', '/api', '', 0, 1],
      ['PathPrefix', '/api', '', 0, 0],
      ['PathPrefix', '/', '', 0, 0],
      ['RegularExpression', '/x.*', '', 0, 0],
    ]);
  });

  it('breaks ties by the oldest route, then ns/name, then rule and match order', () => {
    const same = (name: string, created?: string) => route(name, `${toWeb()}  rules:\n    - matches: [{path: {value: /p}}]\n      backendRefs: [{name: web, port: 80}]\n    - matches: [{path: {value: /p}}, {path: {value: /q}}]\n      backendRefs: [{name: web-v2, port: 80}]\n`, { ...(created ? { created } : {}) });
    const byName = compile([same('b'), same('a')].join('---\n'));
    // /p and /q tie on length: age, name, rule and match order decide.
    expect(order(byName, WEB, 80)).toEqual([
      'HTTPRoute shop/a rule 0: PathPrefix /p',
      'HTTPRoute shop/a rule 1: PathPrefix /p',
      'HTTPRoute shop/a rule 1: PathPrefix /q',
      'HTTPRoute shop/b rule 0: PathPrefix /p',
      'HTTPRoute shop/b rule 1: PathPrefix /p',
      'HTTPRoute shop/b rule 1: PathPrefix /q',
    ]);
    // The oldest route wins over the first name; a route without a timestamp counts as newest.
    const byAge = compile([same('a', '2024-05-01T00:00:00Z'), same('b', '2024-01-01T00:00:00Z'), same('c')].join('---\n'));
    expect(order(byAge, WEB, 80).filter((s) => s.endsWith('/p'))).toEqual([
      'HTTPRoute shop/b rule 0: PathPrefix /p',
      'HTTPRoute shop/b rule 1: PathPrefix /p',
      'HTTPRoute shop/a rule 0: PathPrefix /p',
      'HTTPRoute shop/a rule 1: PathPrefix /p',
      'HTTPRoute shop/c rule 0: PathPrefix /p',
      'HTTPRoute shop/c rule 1: PathPrefix /p',
    ]);
  });
});

describe('HTTPRoute filters, timeouts and retries', () => {
  it('compiles header modifiers, URL rewrites, redirects and mirrors (rule and backend level)', () => {
    const c = compile(
      route(
        'r',
        `${toWeb()}  rules:
    - matches: [{path: {type: PathPrefix, value: /old}}]
      filters:
        - type: RequestHeaderModifier
          requestHeaderModifier: {set: [{name: X-A, value: "1"}], add: [{name: X-B, value: "2"}], remove: [X-C]}
        - type: ResponseHeaderModifier
          responseHeaderModifier: {remove: [Server]}
        - type: URLRewrite
          urlRewrite: {hostname: new.example.com, path: {type: ReplacePrefixMatch, replacePrefixMatch: /new}}
        - type: RequestMirror
          requestMirror: {backendRef: {name: web-v2, port: 80}, percent: 10}
        - type: RequestMirror
          requestMirror: {backendRef: {name: web-v2, port: 80}, fraction: {numerator: 1, denominator: 8}}
        - type: RequestMirror
          requestMirror: {backendRef: {name: ghost, port: 80}}
      backendRefs:
        - name: web
          port: 80
          filters: [{type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: X-Backend, value: web}]}}]
    - matches: [{path: {type: Exact, value: /moved}}]
      filters:
        - type: RequestRedirect
          requestRedirect: {scheme: https, hostname: example.com, port: 8443, path: {type: ReplaceFullPath, replaceFullPath: /here}, statusCode: 308}
    - matches: [{path: {type: Exact, value: /elsewhere}}]
      filters: [{type: RequestRedirect, requestRedirect: {hostname: example.org}}]
`,
      ),
    );
    const [r0, r1, r2] = ['rule 0', 'rule 1', 'rule 2'].map((s) => routesFor(c, WEB).rules.find((r) => r.source === `HTTPRoute shop/r ${s}`)!);
    expect(r0!.filters).toEqual([
      { type: 'RequestHeaderModifier', modifier: { set: [['X-A', '1']], add: [['X-B', '2']], remove: ['X-C'] } },
      { type: 'ResponseHeaderModifier', modifier: { set: [], add: [], remove: ['Server'] } },
      { type: 'URLRewrite', hostname: 'new.example.com', path: { type: 'ReplacePrefixMatch', value: '/new' } },
      { type: 'RequestMirror', backend: { service: WEB_V2, port: 80, weight: 1, filters: [] }, percent: 10 },
      { type: 'RequestMirror', backend: { service: WEB_V2, port: 80, weight: 1, filters: [] }, percent: 12.5 },
    ]);
    expect(r0!.backends[0]!.filters).toEqual([{ type: 'RequestHeaderModifier', modifier: { set: [['X-Backend', 'web']], add: [], remove: [] } }]);
    expect(r1!).toMatchObject({ backends: [], filters: [{ type: 'RequestRedirect', scheme: 'https', hostname: 'example.com', port: 8443, path: { type: 'ReplaceFullPath', value: '/here' }, statusCode: 308 }] });
    expect(r2!.filters).toEqual([{ type: 'RequestRedirect', hostname: 'example.org', statusCode: 302 }]);
    // The mirror to a Service that does not exist is dropped, with a problem.
    expect(problemLines(c)).toEqual([`error ${lineOf(c.text, 'type: RequestMirror', 3)} HTTPRoute shop/r: spec.rules[0].filters[5].requestMirror.backendRef: backend Service shop/ghost does not exist; nothing is mirrored`]);
  });

  it('ignores CORS with a warning and answers 500 for an ExtensionRef filter (it must not be skipped)', () => {
    const c = compile(
      route(
        'r',
        `${toWeb()}  rules:\n    - filters: [{type: CORS, cors: {allowOrigins: ["*"]}}]\n      backendRefs: [{name: web, port: 80}]\n    - matches: [{path: {value: /x}}]\n      filters: [{type: ExtensionRef, extensionRef: {group: example.com, kind: Auth, name: a}}]\n      backendRefs: [{name: web, port: 80}]\n`,
      ),
    );
    const rules = routesFor(c, WEB).rules;
    expect(rules.find((r) => r.source.endsWith('rule 0'))!).toMatchObject({ filters: [], backends: [{ service: WEB }] });
    expect(rules.find((r) => r.source.endsWith('rule 1'))!).toMatchObject({ filters: [], backends: [] });
    expect(problemLines(c)).toEqual([
      `warning ${lineOf(c.text, 'type: CORS')} HTTPRoute shop/r: spec.rules[0].filters[0]: the CORS filter is not supported; responses carry no CORS headers (browsers refuse cross-origin reads)`,
      `error ${lineOf(c.text, 'type: ExtensionRef')} HTTPRoute shop/r: spec.rules[1].filters[0]: the ExtensionRef filter is not supported; requests matching this rule get 500`,
    ]);
  });

  it('reads timeouts as Gateway API durations (0s: none) and retries with their defaults', () => {
    const c = compile(
      route(
        'r',
        `${toWeb()}  rules:
    - matches: [{path: {value: /a}}]
      timeouts: {request: 1h2m, backendRequest: 1s500ms}
      retry: {attempts: 3, backoff: 100ms, codes: [503, 500]}
      backendRefs: [{name: web, port: 80}]
    - matches: [{path: {value: /b}}]
      timeouts: {request: 0s, backendRequest: 250ms}
      retry: {}
      backendRefs: [{name: web, port: 80}]
    - matches: [{path: {value: /c}}]
      retry: {attempts: 0}
      backendRefs: [{name: web, port: 80}]
`,
      ),
    );
    const rule = (n: number) => routesFor(c, WEB).rules.find((r) => r.source.endsWith(`rule ${n}`))!;
    expect(rule(0)).toMatchObject({ timeoutMs: 3_720_000, backendTimeoutMs: 1500, retry: { attempts: 3, backoffMs: 100, codes: [500, 503], onConnectFailure: true } });
    expect(rule(1).timeoutMs).toBeUndefined();
    expect(rule(1)).toMatchObject({ backendTimeoutMs: 250, retry: { attempts: 2, backoffMs: 25, codes: [], onConnectFailure: true } });
    expect(rule(2).retry).toBeUndefined();
    expect(rule(2).timeoutMs).toBeUndefined();
  });
});
