// VirtualService → ServiceRoutes: matches in order, destinations and subsets, retries, faults,
// mirrors, rewrites, redirects, producer and consumer scope, precedence against HTTPRoute.
import { describe, expect, it } from 'vitest';
import { ISTIO_DEFAULT_RETRY, UNKNOWN_SUBSET_LABEL } from '../../src/controlplane/routes.js';
import { DEFAULT_MESH } from '../../src/controlplane/translate.js';
import { API, compile, lineOf, order, problemLines, routesFor, tableOf, WEB, WEB_V2 } from '../helpers/routes.js';

const vs = (name: string, spec: string, opts: { ns?: string; created?: string; version?: string } = {}) => `apiVersion: networking.istio.io/${opts.version ?? 'v1'}
kind: VirtualService
metadata:
  name: ${name}
  namespace: ${opts.ns ?? 'shop'}${opts.created ? `\n  creationTimestamp: "${opts.created}"` : ''}
spec:
${spec}`;
const dr = (name: string, spec: string, opts: { ns?: string; created?: string } = {}) => `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: ${name}
  namespace: ${opts.ns ?? 'shop'}${opts.created ? `\n  creationTimestamp: "${opts.created}"` : ''}
spec:
${spec}`;
const SUBSETS = dr('web-v2', `  host: web-v2\n  subsets:\n    - {name: v2, labels: {version: v2}}\n    - {name: v3, labels: {version: v3}}\n`);

describe('VirtualService matches and destinations', () => {
  it('keeps the http routes in order and compiles every match type', () => {
    const c = compile(
      vs(
        'vs',
        `  hosts: [web]
  http:
    - name: catch-all-first
      route: [{destination: {host: web}}]
    - match:
        - uri: {exact: /a}
        - uri: {prefix: /b}
          method: {exact: POST}
        - uri: {regex: "/c/[0-9]+"}
          headers: {x-env: {exact: prod}, x-pre: {prefix: canary}, x-re: {regex: "v[12]"}, x-any: {}}
          withoutHeaders: {x-debug: {}}
          queryParams: {q: {exact: "1"}, r: {regex: "x.*"}}
      route: [{destination: {host: web-v2}}]
`,
      ),
    );
    // First match wins: no sorting, so the catch-all shadows what follows.
    expect(order(c, WEB, 80)).toEqual(['VirtualService shop/vs http 0 (catch-all-first): *', 'VirtualService shop/vs http 1: Exact /a', 'VirtualService shop/vs http 1: Prefix /b', 'VirtualService shop/vs http 1: RegularExpression /c/[0-9]+']);
    const entries = tableOf(c, WEB, 80).entries;
    expect(entries[0]!.match).toEqual({ headers: [], queryParams: [] });
    expect(entries[2]!.match).toEqual({ path: { type: 'Prefix', value: '/b' }, method: 'POST', headers: [], queryParams: [] });
    expect(entries[3]!.match).toEqual({
      path: { type: 'RegularExpression', value: '/c/[0-9]+' },
      headers: [
        { name: 'x-env', type: 'Exact', value: 'prod' },
        { name: 'x-pre', type: 'Prefix', value: 'canary' },
        { name: 'x-re', type: 'RegularExpression', value: 'v[12]' },
        { name: 'x-any', type: 'Present', value: '' },
        { name: 'x-debug', type: 'Present', value: '', invert: true },
      ],
      queryParams: [
        { name: 'q', type: 'Exact', value: '1' },
        { name: 'r', type: 'RegularExpression', value: 'x.*' },
      ],
    });
    expect(c.problems).toEqual([]);
  });

  it('resolves hosts as short names, name.ns, name.ns.svc and FQDNs (with the mesh domain); others are warned about', () => {
    const c = compile(
      vs(
        'vs',
        `  hosts: [web, web-v2.shop, api.team-b.svc, "*.shop.svc.cluster.local", example.com]
  http:
    - route:
        - {destination: {host: web-v2.shop.svc.cluster.local}, weight: 75}
        - {destination: {host: api.team-b, port: {number: 8080}}, weight: 25}
`,
      ),
    );
    expect(c.routes.map((r) => r.service)).toEqual([WEB_V2, WEB, API]);
    expect(routesFor(c, API).tables).toEqual([{ port: 8080, consumerNamespace: 'shop', entries: [{ match: { headers: [], queryParams: [] }, rule: 0, hostnames: [] }] }]);
    expect(routesFor(c, WEB).rules[0]!.backends).toEqual([
      { service: WEB_V2, port: 80, weight: 75, filters: [] },
      { service: API, port: 8080, weight: 25, filters: [] },
    ]);
    expect(problemLines(c)).toEqual([
      `warning ${lineOf(c.text, 'hosts: [web')} VirtualService shop/vs: spec.hosts[3]: "*.shop.svc.cluster.local": wildcard hosts are not supported; ignored`,
      `warning ${lineOf(c.text, 'hosts: [web')} VirtualService shop/vs: spec.hosts[4]: "example.com": no Service in the mesh has this host; ignored`,
    ]);
    const other = compile(vs('vs', `  hosts: [web.shop.svc.corp.internal]\n  http: [{route: [{destination: {host: web-v2}}]}]\n`), {}, { ...DEFAULT_MESH, clusterDomain: 'corp.internal' });
    expect(other.routes.map((r) => r.service)).toEqual(['shop/web.shop.svc.corp.internal']);
  });

  it('gives one destination all traffic, defaults the port for a single-port Service, and reports unknown hosts and ports', () => {
    const c = compile(
      vs(
        'vs',
        `  hosts: [web]
  http:
    - match: [{uri: {prefix: /one}}]
      route: [{destination: {host: web-v2}, weight: 0}]
    - match: [{uri: {prefix: /multi}}]
      route:
        - {destination: {host: web}, weight: 1}
        - {destination: {host: ghost}, weight: 1}
        - {destination: {host: web-v2, port: {number: 81}}, weight: 1}
`,
      ),
    );
    const [one, multi] = routesFor(c, WEB).rules;
    expect(one!.backends).toEqual([{ service: WEB_V2, port: 80, weight: 1, filters: [] }]);
    // web has two ports: without a port number the request's own port is kept (0).
    expect(multi!.backends).toEqual([
      { service: WEB, port: 0, weight: 1, filters: [] },
      { service: 'shop/ghost.invalid', port: 0, weight: 1, filters: [] },
      { service: 'shop/web-v2.invalid', port: 81, weight: 1, filters: [] },
    ]);
    expect(problemLines(c)).toEqual([
      `error ${lineOf(c.text, 'host: ghost')} VirtualService shop/vs: spec.http[1].route[1].destination.host: destination host "ghost" is not a Service in the mesh; requests sent to it get 500`,
      `error ${lineOf(c.text, 'number: 81')} VirtualService shop/vs: spec.http[1].route[2].destination.port.number: Service shop/web-v2 has no TCP port 81; requests sent to it get 500`,
    ]);
  });

  it('names subsets by their DestinationRule labels; an unknown subset gets a label no endpoint has', () => {
    const c = compile(`${SUBSETS}---\n${vs('vs', `  hosts: [web]\n  http:\n    - route:\n        - {destination: {host: web-v2, subset: v2}, weight: 90}\n        - {destination: {host: web-v2, subset: v9}, weight: 10}\n`)}`);
    expect(routesFor(c, WEB).rules[0]!.backends.map((b) => b.subset)).toEqual([
      { name: 'v2', labels: { version: 'v2' } },
      { name: 'v9', labels: { [UNKNOWN_SUBSET_LABEL]: 'v9' } },
    ]);
    expect(problemLines(c)).toEqual([`error ${lineOf(c.text, 'subset: v9')} VirtualService shop/vs: spec.http[0].route[1].destination.subset: subset "v9" is not defined by a DestinationRule for web-v2.shop; no endpoint is chosen for it (503)`]);
  });

  it('restricts matches to their port and to the mesh gateway; a VirtualService bound only to gateways is not the mesh\'s', () => {
    const c = compile(
      `${vs('vs', `  hosts: [web]\n  gateways: [mesh, ingress]\n  http:\n    - match: [{port: 9000}]\n      route: [{destination: {host: web}}]\n    - match: [{gateways: [ingress]}]\n      route: [{destination: {host: web-v2}}]\n    - route: [{destination: {host: web-v2}}]\n`)}---\n${vs('edge', `  hosts: [web-v2]\n  gateways: [ingress]\n  http: [{route: [{destination: {host: web}}], corsPolicy: {allowOrigins: [{exact: x}]}}]\n`)}`,
    );
    expect(order(c, WEB, 80)).toEqual(['VirtualService shop/vs http 2: *']);
    expect(order(c, WEB, 9000)).toEqual(['VirtualService shop/vs http 0: *', 'VirtualService shop/vs http 2: *']);
    expect(c.routes.map((r) => r.service)).toEqual([WEB]);
    // The gateway-only VirtualService's fields are not ours to warn about.
    expect(c.problems).toEqual([]);
  });

  it('drops a match it cannot evaluate, with a warning, instead of widening it', () => {
    const c = compile(vs('vs', `  hosts: [web]\n  http:\n    - match:\n        - {uri: {prefix: /a}, sourceLabels: {app: x}}\n        - uri: {prefix: /b}\n        - headers: {":authority": {exact: web.example}}\n      route: [{destination: {host: web-v2}}]\n`));
    expect(order(c, WEB, 80)).toEqual(['VirtualService shop/vs http 0: Prefix /b']);
    expect(problemLines(c)).toEqual([
      `warning ${lineOf(c.text, 'sourceLabels')} VirtualService shop/vs: spec.http[0].match[0].sourceLabels: sourceLabels matching is not supported; this match is ignored (it never matches)`,
      `warning ${lineOf(c.text, ':authority')} VirtualService shop/vs: spec.http[0].match[2].headers: matching the pseudo-header :authority is not supported; this match is ignored (it never matches)`,
    ]);
  });
});

describe('VirtualService actions', () => {
  it('compiles timeouts, retries (Istio default, retryOn conditions, codes), faults and header operations', () => {
    const c = compile(
      vs(
        'vs',
        `  hosts: [web-v2]
  http:
    - match: [{uri: {prefix: /default}}]
      route: [{destination: {host: web-v2}}]
    - match: [{uri: {prefix: /custom}}]
      timeout: 1.5s
      retries: {attempts: 3, perTryTimeout: 500ms, backoff: 50ms, retryOn: "gateway-error,reset,retriable-status-codes,409,deadline-exceeded"}
      fault:
        delay: {fixedDelay: 2s, percentage: {value: 12.5}}
        abort: {httpStatus: 503, percentage: {value: 1}}
      headers:
        request: {set: {x-a: "1"}, add: {x-b: "2"}, remove: [x-c]}
        response: {remove: [server]}
      route:
        - destination: {host: web-v2}
          headers: {response: {set: {x-from: v2}}}
    - match: [{uri: {prefix: /off}}]
      retries: {attempts: 0}
      fault: {abort: {grpcStatus: UNAVAILABLE}}
      route: [{destination: {host: web-v2}}]
    - match: [{uri: {prefix: /5xx}}]
      retries: {attempts: 1, retryOn: 5xx}
      route: [{destination: {host: web-v2}}]
`,
      ),
    );
    const [dflt, custom, off, all5xx] = routesFor(c, WEB_V2).rules;
    expect(dflt!.retry).toEqual(ISTIO_DEFAULT_RETRY);
    expect(custom).toMatchObject({
      timeoutMs: 1500,
      retry: { attempts: 3, perTryTimeoutMs: 500, backoffMs: 50, codes: [409, 502, 503, 504], onConnectFailure: true },
      fault: { delay: { ms: 2000, percent: 12.5 }, abort: { status: 503, percent: 1 } },
      filters: [
        { type: 'RequestHeaderModifier', modifier: { set: [['x-a', '1']], add: [['x-b', '2']], remove: ['x-c'] } },
        { type: 'ResponseHeaderModifier', modifier: { set: [], add: [], remove: ['server'] } },
      ],
      backends: [{ service: WEB_V2, port: 80, weight: 1, filters: [{ type: 'ResponseHeaderModifier', modifier: { set: [['x-from', 'v2']], add: [], remove: [] } }] }],
    });
    expect(off!.retry).toBeUndefined();
    expect(off!.fault).toEqual({ abort: { status: 200, percent: 0, grpcStatus: 14 } });
    expect(all5xx!.retry!.codes).toHaveLength(100);
    expect(problemLines(c)).toEqual([
      `warning ${lineOf(c.text, 'fault: {abort: {grpcStatus')} VirtualService shop/vs: spec.http[2].fault.abort.percentage: percentage is not set, so no request is affected (Istio: "if left unspecified, no request will be" delayed or aborted)`,
      `warning ${lineOf(c.text, 'retries: {attempts: 3')} VirtualService shop/vs: spec.http[1].retries.retryOn: retryOn deadline-exceeded is not supported (gRPC and header conditions); ignored`,
    ]);
  });

  it('rewrites the matched prefix after a prefix match and the whole path otherwise, splitting a mixed route', () => {
    const c = compile(
      vs('vs', `  hosts: [web-v2]\n  http:\n    - match: [{uri: {prefix: /v1}}, {uri: {exact: /legacy}}, {uri: {prefix: /old}}]\n      rewrite: {uri: /v2, authority: new.example}\n      route: [{destination: {host: web-v2}}]\n    - match: [{uri: {prefix: /p}}]\n      rewrite: {uri: /q}\n      route: [{destination: {host: web-v2}}]\n`),
    );
    const rules = routesFor(c, WEB_V2).rules;
    expect(rules.map((r) => [r.source, r.filters])).toEqual([
      ['VirtualService shop/vs http 0, prefix matches', [{ type: 'URLRewrite', hostname: 'new.example', path: { type: 'ReplacePrefixMatch', value: '/v2' } }]],
      ['VirtualService shop/vs http 0, other matches', [{ type: 'URLRewrite', hostname: 'new.example', path: { type: 'ReplaceFullPath', value: '/v2' } }]],
      ['VirtualService shop/vs http 1', [{ type: 'URLRewrite', path: { type: 'ReplacePrefixMatch', value: '/q' } }]],
    ]);
    // Split or not, the matches keep their order.
    expect(order(c, WEB_V2, 80)).toEqual(['VirtualService shop/vs http 0, prefix matches: Prefix /v1', 'VirtualService shop/vs http 0, other matches: Exact /legacy', 'VirtualService shop/vs http 0, prefix matches: Prefix /old', 'VirtualService shop/vs http 1: Prefix /p']);
  });

  it('compiles redirects (301 by default), mirrors with their percentage, and answers 500 for directResponse', () => {
    const c = compile(
      vs(
        'vs',
        `  hosts: [web-v2]
  http:
    - match: [{uri: {exact: /moved}}]
      redirect: {uri: /new, authority: example.com, port: 8443, scheme: https, redirectCode: 308}
    - match: [{uri: {prefix: /old}}]
      redirect: {prefixRewrite: /new}
    - match: [{uri: {prefix: /shadow}}]
      route: [{destination: {host: web-v2}}]
      mirror: {host: web, port: {number: 80}}
      mirrorPercentage: {value: 20}
    - match: [{uri: {prefix: /shadows}}]
      route: [{destination: {host: web-v2}}]
      mirrors: [{destination: {host: api.team-b}}, {destination: {host: nowhere}, percentage: {value: 5}}]
    - match: [{uri: {prefix: /static}}]
      directResponse: {status: 404}
`,
      ),
    );
    const [moved, old, shadow, shadows, direct] = routesFor(c, WEB_V2).rules;
    expect(moved).toMatchObject({ backends: [], filters: [{ type: 'RequestRedirect', scheme: 'https', hostname: 'example.com', port: 8443, path: { type: 'ReplaceFullPath', value: '/new' }, statusCode: 308 }] });
    expect(old!.filters).toEqual([{ type: 'RequestRedirect', path: { type: 'ReplacePrefixMatch', value: '/new' }, statusCode: 301 }]);
    expect(shadow!.filters).toEqual([{ type: 'RequestMirror', backend: { service: WEB, port: 80, weight: 1, filters: [] }, percent: 20 }]);
    expect(shadows!.filters).toEqual([{ type: 'RequestMirror', backend: { service: API, port: 8080, weight: 1, filters: [] }, percent: 100 }]);
    expect(direct).toMatchObject({ backends: [], filters: [] });
    expect(problemLines(c)).toEqual([
      `error ${lineOf(c.text, 'directResponse')} VirtualService shop/vs: spec.http[4].directResponse: directResponse is not supported; requests matching this route get 500`,
      `error ${lineOf(c.text, 'mirrors: [')} VirtualService shop/vs: spec.http[3].mirrors[1].destination.host: destination host "nowhere" is not a Service in the mesh; nothing is mirrored to it`,
    ]);
  });
});

describe('VirtualService scope and precedence', () => {
  it('is a producer in the Service namespace and a consumer elsewhere; exportTo is warned about', () => {
    const c = compile(`${vs('prod', `  hosts: [web]\n  http: [{route: [{destination: {host: web}}]}]\n`)}---\n${vs('cons', `  hosts: [web.shop]\n  exportTo: ["."]\n  http: [{route: [{destination: {host: web-v2.shop}}]}]\n`, { ns: 'clients' })}`);
    expect(routesFor(c, WEB).tables.map((t) => [t.port, t.consumerNamespace])).toEqual([
      [80, undefined],
      [80, 'clients'],
      [9000, undefined],
      [9000, 'clients'],
    ]);
    expect(order(c, WEB, 80, 'clients')).toEqual(['VirtualService clients/cons http 0: *']);
    expect(problemLines(c)).toEqual([`warning ${lineOf(c.text, 'exportTo')} VirtualService clients/cons: spec.exportTo: exportTo is not supported; the VirtualService applies as if exported to every namespace`]);
  });

  it('applies the oldest of two VirtualServices for a host, warning about the other', () => {
    const c = compile(
      `${vs('newer', `  hosts: [web]\n  http: [{route: [{destination: {host: web-v2}}]}]\n`, { created: '2024-06-01T00:00:00Z' })}---\n${vs('older', `  hosts: [web]\n  http: [{route: [{destination: {host: web}}]}]\n`, { created: '2024-01-01T00:00:00Z', version: 'v1beta1' })}`,
    );
    expect(order(c, WEB, 80)).toEqual(['VirtualService shop/older http 0: *']);
    expect(problemLines(c)).toEqual([`warning ${lineOf(c.text, 'hosts: [web]')} VirtualService shop/newer: spec.hosts[0]: VirtualService shop/older (older) already routes Service shop/web; Istio applies one VirtualService per host to mesh traffic, so this one is ignored for it`]);
  });

  it('yields the ports that HTTPRoutes hold, keeping the others, with a warning', () => {
    const c = compile(
      `apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r, namespace: shop}\nspec:\n  parentRefs: [{kind: Service, group: "", name: web, port: 80}]\n  rules: [{backendRefs: [{name: web-v2, port: 80}]}]\n---\n${vs('vs', `  hosts: [web]\n  http: [{route: [{destination: {host: web}}]}]\n`)}`,
    );
    expect(order(c, WEB, 80)).toEqual(['HTTPRoute shop/r rule 0: PathPrefix /']);
    expect(order(c, WEB, 9000)).toEqual(['VirtualService shop/vs http 0: *']);
    expect(c.problems).toMatchObject([{ severity: 'warning', code: 'NM_ERR_CONFIG_CONFLICT', message: 'VirtualService shop/vs: spec.hosts[0]: HTTPRoutes are attached to Service shop/web port 80 and take precedence; this VirtualService is not applied there' }]);
  });
});
