// DestinationRule → ServiceRoutes: traffic policy and subsets (with or without routes), which
// rule applies to a Service, how rules merge, and the fields that are noted and not applied.
import { describe, expect, it } from 'vitest';
import { API, compile, lineOf, problemLines, routesFor, WEB } from '../helpers/routes.js';

const dr = (name: string, spec: string, opts: { ns?: string; created?: string } = {}) => `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: ${name}
  namespace: ${opts.ns ?? 'shop'}${opts.created ? `\n  creationTimestamp: "${opts.created}"` : ''}
spec:
${spec}`;

describe('DestinationRule', () => {
  it('gives the Service its policy and subsets even without routes; a subset section replaces the rule\'s', () => {
    const c = compile(
      dr(
        'web',
        `  host: web.shop.svc.cluster.local
  trafficPolicy:
    loadBalancer: {simple: LEAST_CONN}
    connectionPool:
      tcp: {maxConnections: 100}
      http: {http1MaxPendingRequests: 10, http2MaxRequests: 1000, maxRequestsPerConnection: 1}
    outlierDetection: {consecutive5xxErrors: 3, interval: 5s}
  subsets:
    - name: v1
      labels: {version: v1}
      trafficPolicy:
        loadBalancer: {simple: RANDOM}
        outlierDetection: {}
    - name: v2
      labels: {version: v2}
`,
      ),
    );
    const sr = routesFor(c, WEB);
    expect(sr).toEqual({
      service: WEB,
      rules: [],
      tables: [],
      trafficPolicy: {
        loadBalancer: 'LEAST_REQUEST',
        connectionPool: { maxConnections: 100, maxPendingRequests: 10, maxRequests: 1000, maxRequestsPerConnection: 1 },
        outlierDetection: { consecutive5xxErrors: 3, intervalMs: 5000, baseEjectionTimeMs: 30_000, maxEjectionPercent: 10 },
      },
      subsets: [
        {
          name: 'v1',
          labels: { version: 'v1' },
          // The subset's outlierDetection ({}: Istio's defaults) replaces the rule's; its pool is the rule's.
          trafficPolicy: {
            loadBalancer: 'RANDOM',
            connectionPool: { maxConnections: 100, maxPendingRequests: 10, maxRequests: 1000, maxRequestsPerConnection: 1 },
            outlierDetection: { consecutive5xxErrors: 5, intervalMs: 10_000, baseEjectionTimeMs: 30_000, maxEjectionPercent: 10 },
          },
        },
        { name: 'v2', labels: { version: 'v2' } },
      ],
    });
    expect(c.problems).toEqual([]);
  });

  it('names every field it does not apply', () => {
    const c = compile(
      dr(
        'web',
        `  host: web
  trafficPolicy:
    loadBalancer: {consistentHash: {httpHeaderName: x-user}}
    connectionPool: {tcp: {connectTimeout: 1s}}
    outlierDetection: {consecutiveGatewayErrors: 2}
    portLevelSettings: [{port: {number: 80}, loadBalancer: {simple: RANDOM}}]
    tls: {mode: SIMPLE}
`,
      ),
    );
    expect(c.problems.map((p) => [p.severity, p.message])).toEqual([
      ['warning', 'DestinationRule shop/web: spec.trafficPolicy.tls: tls is not supported; mesh traffic is mutual TLS over HBONE, other traffic leaves as the client sent it'],
      ['warning', 'DestinationRule shop/web: spec.trafficPolicy.portLevelSettings: portLevelSettings is not supported; ignored (the Service-wide policy applies to every port)'],
      ['warning', 'DestinationRule shop/web: spec.trafficPolicy.loadBalancer.consistentHash: consistentHash is not supported; ignored'],
      ['warning', 'DestinationRule shop/web: spec.trafficPolicy.connectionPool.tcp.connectTimeout: connectTimeout is not supported; ignored'],
      ['warning', 'DestinationRule shop/web: spec.trafficPolicy.outlierDetection.consecutiveGatewayErrors: consecutiveGatewayErrors is not supported; only consecutive5xxErrors ejects endpoints'],
    ]);
    expect(c.problems[0]!.line).toBe(lineOf(c.text, 'tls: {mode'));
    expect(routesFor(c, WEB).trafficPolicy).toEqual({ outlierDetection: { consecutive5xxErrors: 5, intervalMs: 10_000, baseEjectionTimeMs: 30_000, maxEjectionPercent: 10 } });
  });

  it('prefers the Service namespace over the root namespace, merges rules of one namespace, and ignores client-side ones', () => {
    const c = compile(
      [
        dr('root', `  host: web.shop.svc.cluster.local\n  trafficPolicy: {loadBalancer: {simple: RANDOM}}\n`, { ns: 'istio-system' }),
        dr('a', `  host: web\n  trafficPolicy: {loadBalancer: {simple: ROUND_ROBIN}}\n  subsets: [{name: v1, labels: {version: v1}}]\n`, { created: '2024-01-01T00:00:00Z' }),
        dr('b', `  host: web\n  trafficPolicy: {loadBalancer: {simple: LEAST_REQUEST}}\n  subsets: [{name: v2, labels: {version: v2}}, {name: v1, labels: {other: x}}]\n`, { created: '2024-02-01T00:00:00Z' }),
        dr('client', `  host: web.shop\n  trafficPolicy: {loadBalancer: {simple: RANDOM}}\n`, { ns: 'clients' }),
        dr('only-root', `  host: api.team-b.svc.cluster.local\n  trafficPolicy: {loadBalancer: {simple: RANDOM}}\n`, { ns: 'istio-system' }),
      ].join('---\n'),
    );
    expect(routesFor(c, WEB)).toMatchObject({ trafficPolicy: { loadBalancer: 'ROUND_ROBIN' }, subsets: [{ name: 'v1', labels: { version: 'v1' } }, { name: 'v2', labels: { version: 'v2' } }] });
    expect(routesFor(c, API).trafficPolicy).toEqual({ loadBalancer: 'RANDOM' });
    expect(c.problems.map((p) => `${p.severity} ${p.code} ${p.message}`)).toEqual([
      "warning NM_ERR_POLICY DestinationRule clients/client: spec.host: a DestinationRule outside the Service's namespace (shop) or the root namespace (istio-system) is a client-side override, which is not supported; the rule is not applied",
      "warning NM_ERR_CONFIG_CONFLICT DestinationRule istio-system/root: spec.host: the Service's namespace has a DestinationRule for web.shop.svc.cluster.local too, which takes precedence; this one is not applied",
      "warning NM_ERR_CONFIG_CONFLICT DestinationRule shop/b: spec.trafficPolicy: DestinationRule shop/a (older) already sets the trafficPolicy of web; this one's is ignored, its subsets are added",
      'warning NM_ERR_CONFIG_CONFLICT DestinationRule shop/b: spec.subsets[1].name: subset "v1" of web is already defined by an older DestinationRule; ignored',
    ]);
  });

  it('does not apply a rule with a workloadSelector, or for a host that is no Service', () => {
    const c = compile([dr('sel', `  host: web\n  workloadSelector: {matchLabels: {app: client}}\n  trafficPolicy: {loadBalancer: {simple: RANDOM}}\n`), dr('ext', `  host: example.com\n  trafficPolicy: {loadBalancer: {simple: RANDOM}}\n`)].join('---\n'));
    expect(c.routes).toEqual([]);
    expect(problemLines(c)).toEqual([
      `warning ${lineOf(c.text, 'host: example.com')} DestinationRule shop/ext: spec.host: "example.com": no Service in the mesh has this host; the rule is not applied`,
      `warning ${lineOf(c.text, 'workloadSelector')} DestinationRule shop/sel: spec.workloadSelector: workloadSelector is not supported (the rule is for some clients only, which the node proxy cannot tell apart); the rule is not applied`,
    ]);
  });
});
