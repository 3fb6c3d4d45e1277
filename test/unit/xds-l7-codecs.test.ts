// nodemesh's L7 xDS codecs: ServiceRoutes, RequestAuthentication, Authorization.l7_rules and
// Workload.labels go state → message → bytes → message → state unchanged (property), every
// validation failure names its field, and the extension field numbers stay pinned.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { isNodemeshError } from '../../src/errors.js';
import { cidr } from '../../src/net/index.js';
import type { Authorization, HttpAttributes, Match, RequestAuthentication, Rule, StringMatch, ValueCondition } from '../../src/state/policy.js';
import type { BackendRef, HttpMatch, RouteFilter, RouteRule, ServiceRoutes, TrafficPolicy, ValueMatch } from '../../src/state/routes.js';
import { authorizationFromProto, authorizationToProto, workloadFromProto } from '../../src/xds/convert.js';
import { l7RulesToProto } from '../../src/xds/convert-authz.js';
import { requestAuthnFromProto, requestAuthnToProto } from '../../src/xds/convert-requestauthn.js';
import { serviceRoutesFromProto, serviceRoutesToProto } from '../../src/xds/convert-routes.js';
import { codecs, protoRoot, type PbAuthorization, type PbWorkload } from '../../src/xds/proto.js';
import type { PbRequestAuthentication, PbServiceRoutes } from '../../src/xds/proto-l7.js';

// ---- arbitraries: valid states in their canonical form ---------------------------------

const ident = fc.stringMatching(/^[a-z][a-z0-9-]{0,7}$/);
const text = fc.string({ unit: 'grapheme', maxLength: 6 });
const key = fc.tuple(ident, ident).map(([a, b]) => `${a}/${b}.svc`);
const labels = fc.dictionary(ident, fc.string({ maxLength: 6 }), { maxKeys: 3 });
const someLabels = fc.dictionary(ident, fc.string({ maxLength: 6 }), { minKeys: 1, maxKeys: 3 });
const headerName = fc.stringMatching(/^[a-z][a-z0-9-]{0,9}$/);
const mixedHeaderName = fc.stringMatching(/^[A-Za-z][A-Za-z0-9-]{0,9}$/);
const headerValue = fc.string({ maxLength: 8 }); // printable ASCII
// RE2 syntax, some of which JavaScript's parser refuses: none of it may be rejected.
const regexText = fc.constantFrom('^/api/.*$', '[0-9]+', 'a|b', '.*', '^v[12]$', '(?i)/API/v\\d+', '\\Q(a.b\\E', '(?P<v>v[12])', '[[:alpha:]]+', '[]a]');
const pct = fc.double({ min: 0, max: 100, noNaN: true });
const ms = fc.nat({ max: 10_000_000 });
const some = <T>(a: fc.Arbitrary<T>, max = 2) => fc.array(a, { maxLength: max });

const valueMatch = (name: fc.Arbitrary<string>): fc.Arbitrary<ValueMatch> =>
  fc.oneof(
    fc.record({ name, type: fc.constantFrom('Exact' as const, 'Prefix' as const, 'Present' as const), value: text, invert: fc.boolean() }, { requiredKeys: ['name', 'type', 'value'] }),
    fc.record({ name, type: fc.constant('RegularExpression' as const), value: regexText, invert: fc.boolean() }, { requiredKeys: ['name', 'type', 'value'] }),
  );

const httpMatch: fc.Arbitrary<HttpMatch> = fc.record(
  {
    path: fc.oneof(
      fc.record({ type: fc.constantFrom('Exact' as const, 'PathPrefix' as const, 'Prefix' as const), value: text }),
      fc.record({ type: fc.constant('RegularExpression' as const), value: regexText }),
    ),
    method: fc.constantFrom('GET', 'POST', 'PATCH'),
    headers: some(valueMatch(headerName)),
    queryParams: some(valueMatch(ident)),
  },
  { requiredKeys: ['headers', 'queryParams'] },
);

const headerModifier = fc.record({ set: some(fc.tuple(mixedHeaderName, headerValue)), add: some(fc.tuple(mixedHeaderName, headerValue)), remove: some(mixedHeaderName) });
const pathModifier = fc.record({ type: fc.constantFrom('ReplaceFullPath' as const, 'ReplacePrefixMatch' as const), value: text });

function filterArb(backend: fc.Arbitrary<BackendRef> | undefined): fc.Arbitrary<RouteFilter> {
  const plain: fc.Arbitrary<RouteFilter>[] = [
    headerModifier.map((modifier) => ({ type: 'RequestHeaderModifier' as const, modifier })),
    headerModifier.map((modifier) => ({ type: 'ResponseHeaderModifier' as const, modifier })),
    fc.record({ type: fc.constant('URLRewrite' as const), hostname: ident, path: pathModifier }, { requiredKeys: ['type'] }),
    fc.record(
      { type: fc.constant('RequestRedirect' as const), scheme: fc.constantFrom('http', 'https'), hostname: ident, port: fc.integer({ min: 1, max: 65535 }), path: pathModifier, statusCode: fc.constantFrom(301, 302, 308) },
      { requiredKeys: ['type', 'statusCode'] },
    ),
  ];
  if (backend) plain.push(fc.record({ type: fc.constant('RequestMirror' as const), backend, percent: pct }));
  return fc.oneof(...plain);
}

const backendArb = (filters: fc.Arbitrary<RouteFilter> | undefined): fc.Arbitrary<BackendRef> =>
  fc.record(
    {
      service: key,
      port: fc.integer({ min: 0, max: 65535 }),
      weight: fc.integer({ min: 0, max: 1_000_000 }),
      subset: fc.record({ name: ident, labels }),
      filters: filters ? some(filters) : fc.constant([]),
    },
    { requiredKeys: ['service', 'port', 'weight', 'filters'] },
  );
const leafBackend = backendArb(filterArb(undefined));
const backend = backendArb(filterArb(leafBackend));

const ruleArb: fc.Arbitrary<RouteRule> = fc.record(
  {
    source: fc.string({ maxLength: 20 }),
    matches: some(httpMatch),
    filters: some(filterArb(leafBackend)),
    backends: some(backend),
    timeoutMs: ms,
    backendTimeoutMs: ms,
    retry: fc.record(
      { attempts: fc.nat(10), backoffMs: ms, codes: some(fc.integer({ min: 100, max: 599 }), 3), onConnectFailure: fc.boolean(), perTryTimeoutMs: ms },
      { requiredKeys: ['attempts', 'backoffMs', 'codes', 'onConnectFailure'] },
    ),
    fault: fc.record(
      {
        delay: fc.record({ ms, percent: pct }),
        abort: fc.record({ status: fc.integer({ min: 200, max: 599 }), percent: pct, grpcStatus: fc.integer({ min: 0, max: 16 }) }, { requiredKeys: ['status', 'percent'] }),
      },
      { requiredKeys: [] },
    ),
  },
  { requiredKeys: ['source', 'matches', 'filters', 'backends'] },
);

const trafficPolicy: fc.Arbitrary<TrafficPolicy> = fc.record(
  {
    loadBalancer: fc.constantFrom('ROUND_ROBIN' as const, 'LEAST_REQUEST' as const, 'RANDOM' as const),
    connectionPool: fc.record({ maxConnections: fc.nat(), maxPendingRequests: fc.nat(), maxRequests: fc.nat(), maxRequestsPerConnection: fc.nat() }, { requiredKeys: [] }),
    outlierDetection: fc.record({ consecutive5xxErrors: fc.nat(), intervalMs: ms, baseEjectionTimeMs: ms, maxEjectionPercent: fc.integer({ min: 0, max: 100 }) }),
  },
  { requiredKeys: [] },
);

const serviceRoutesArb: fc.Arbitrary<ServiceRoutes> = fc
  .record({ service: key, rules: some(ruleArb, 3) })
  .chain(({ service, rules }) =>
    fc.record(
      {
        service: fc.constant(service),
        rules: fc.constant(rules),
        tables: fc.uniqueArray(
          fc.record(
            {
              port: fc.integer({ min: 1, max: 65535 }),
              consumerNamespace: ident,
              entries: rules.length === 0 ? fc.constant([]) : some(fc.record({ match: httpMatch, rule: fc.nat(rules.length - 1), hostnames: some(ident) }), 3),
            },
            { requiredKeys: ['port', 'entries'] },
          ),
          { maxLength: 3, selector: (t) => `${t.port}/${t.consumerNamespace ?? ''}` },
        ),
        trafficPolicy,
        subsets: fc.uniqueArray(fc.record({ name: ident, labels, trafficPolicy }, { requiredKeys: ['name', 'labels'] }), { maxLength: 2, selector: (s) => s.name }),
      },
      { requiredKeys: ['service', 'rules', 'tables', 'subsets'] },
    ),
  );

const requestAuthnArb: fc.Arbitrary<RequestAuthentication> = fc
  .record({
    name: ident,
    namespace: ident,
    jwtRules: some(
      fc.record({
        issuer: fc.string({ minLength: 1, maxLength: 12 }),
        audiences: some(fc.string({ minLength: 1, maxLength: 6 })),
        jwks: fc.constantFrom('', '{"keys":[]}', '{"keys":[{"kty":"EC","crv":"P-256","x":"a","y":"b"}]}'),
        fromHeaders: some(fc.record({ name: mixedHeaderName, prefix: fc.constantFrom('', 'Bearer ') })),
        fromParams: some(ident),
        forwardOriginalToken: fc.boolean(),
      }),
    ),
  })
  .chain((r) =>
    fc.oneof(
      fc.constant({ ...r, scope: 'NAMESPACE' as const }),
      someLabels.map((selector) => ({ ...r, scope: 'WORKLOAD_SELECTOR' as const, selector })),
      fc.option(someLabels, { nil: undefined }).map((selector) => ({ ...r, scope: 'GLOBAL' as const, ...(selector ? { selector } : {}) })),
    ),
  );

const stringMatch: fc.Arbitrary<StringMatch> = fc.oneof(
  text.map((exact) => ({ exact })),
  text.map((prefix) => ({ prefix })),
  text.map((suffix) => ({ suffix })),
  fc.constant({ presence: true as const }),
);
const cidrArb = fc.oneof(
  fc.tuple(fc.uint8Array({ minLength: 4, maxLength: 4 }), fc.integer({ min: 0, max: 32 })),
  fc.tuple(fc.uint8Array({ minLength: 16, maxLength: 16 }), fc.integer({ min: 0, max: 128 })),
).map(([b, l]) => cidr(b, l));
const sms = some(stringMatch);
const condition = (k: fc.Arbitrary<string>): fc.Arbitrary<ValueCondition> => fc.record({ key: k, values: sms, notValues: sms });
const httpAttributes: fc.Arbitrary<HttpAttributes> = fc.record({
  methods: sms, notMethods: sms, paths: sms, notPaths: sms, hosts: sms, notHosts: sms, requestPrincipals: sms, notRequestPrincipals: sms,
  remoteIps: some(cidrArb), notRemoteIps: some(cidrArb),
  headers: some(condition(headerName)), claims: some(condition(fc.constantFrom('groups', 'nested.claim', 'sub'))),
});
const sa = some(fc.record({ namespace: ident, serviceAccount: ident }));
const port = some(fc.integer({ min: 0, max: 65535 }));
const matchArb = (l7: boolean): fc.Arbitrary<Match> =>
  fc.record(
    {
      namespaces: sms, notNamespaces: sms, principals: sms, notPrincipals: sms, serviceAccounts: sa, notServiceAccounts: sa,
      sourceIps: some(cidrArb), notSourceIps: some(cidrArb), destinationIps: some(cidrArb), notDestinationIps: some(cidrArb),
      destinationPorts: port, notDestinationPorts: port,
      ...(l7 ? { http: httpAttributes } : {}),
    },
    { requiredKeys: ['namespaces', 'notNamespaces', 'principals', 'notPrincipals', 'serviceAccounts', 'notServiceAccounts', 'sourceIps', 'notSourceIps', 'destinationIps', 'notDestinationIps', 'destinationPorts', 'notDestinationPorts'] },
  );
const rulesArb = (l7: boolean, minLength = 0): fc.Arbitrary<Rule[]> => fc.array(fc.record({ clauses: some(fc.record({ matches: some(matchArb(l7)) })) }), { minLength, maxLength: 2 });
const authorizationArb: fc.Arbitrary<Authorization> = fc.record(
  {
    name: ident,
    namespace: ident,
    scope: fc.constantFrom('GLOBAL' as const, 'NAMESPACE' as const, 'WORKLOAD_SELECTOR' as const),
    action: fc.constantFrom('ALLOW' as const, 'DENY' as const),
    rules: rulesArb(false),
    l7Rules: rulesArb(true, 1),
    dryRun: fc.boolean(),
  },
  { requiredKeys: ['name', 'namespace', 'scope', 'action', 'rules', 'dryRun'] },
);

const WEB: PbWorkload = {
  uid: 'Kubernetes//Pod/foo/web', name: 'web', namespace: 'foo', addresses: [Buffer.from([10, 1, 0, 5])], network: '', tunnelProtocol: 'HBONE',
  trustDomain: 'cluster.local', serviceAccount: 'web', node: 'node-a', canonicalName: 'web', canonicalRevision: 'latest', workloadType: 'POD',
  workloadName: 'web', authorizationPolicies: [], status: 'HEALTHY', clusterId: 'Kubernetes', services: {},
};

// ---- round trips ------------------------------------------------------------------------

const viaWire = <T>(c: { encode(v: T): Buffer; decode(b: Uint8Array): T }, v: T): T => c.decode(c.encode(v));

describe('L7 codecs round trip (state → proto → bytes → proto → state)', () => {
  it('ServiceRoutes', () => {
    fc.assert(
      fc.property(serviceRoutesArb, (s) => {
        expect(serviceRoutesFromProto(viaWire(codecs.serviceRoutes, serviceRoutesToProto(s)), s.service)).toEqual(s);
      }),
      { numRuns: 300 },
    );
  });

  it('RequestAuthentication', () => {
    fc.assert(
      fc.property(requestAuthnArb, (r) => {
        expect(requestAuthnFromProto(viaWire(codecs.requestAuthn, requestAuthnToProto(r)), `${r.namespace}/${r.name}`)).toEqual(r);
      }),
      { numRuns: 300 },
    );
  });

  it('Authorization with l7Rules (and without)', () => {
    fc.assert(
      fc.property(authorizationArb, (a) => {
        expect(authorizationFromProto(viaWire(codecs.authorization, authorizationToProto(a)), `${a.namespace}/${a.name}`)).toEqual(a);
      }),
      { numRuns: 200 },
    );
  });

  it('l7RulesToProto, as the control plane fills PbAuthorization.l7Rules', () => {
    fc.assert(
      fc.property(rulesArb(true, 1), (rules) => {
        const pb: PbAuthorization = { name: 'p', namespace: 'foo', scope: 'NAMESPACE', action: 'ALLOW', rules: [], dryRun: false, l7Rules: l7RulesToProto(rules) };
        expect(authorizationFromProto(viaWire(codecs.authorization, pb), 'foo/p').l7Rules).toEqual(rules);
      }),
      { numRuns: 100 },
    );
  });

  it('Workload labels', () => {
    fc.assert(
      fc.property(labels, (l) => {
        const a = viaWire(codecs.address, { workload: { ...WEB, labels: l } });
        expect(workloadFromProto(a.workload!, WEB.uid).labels).toEqual(l);
      }),
    );
    // A workload from a control plane without the extension has no labels.
    expect(workloadFromProto(viaWire(codecs.address, { workload: WEB }).workload!, WEB.uid).labels).toEqual({});
  });
});

// ---- validation -------------------------------------------------------------------------

/** The field a rejection names (the message's head); fails the test when accepted. */
function rejectedField(f: () => unknown): string {
  try {
    f();
  } catch (e) {
    if (!isNodemeshError(e, 'NM_ERR_XDS_RESOURCE')) throw e;
    return e.message.slice(0, e.message.indexOf(': '));
  }
  throw new Error('accepted');
}

const ROUTES: ServiceRoutes = {
  service: 'foo/web.foo.svc.cluster.local',
  rules: [
    {
      source: 'HTTPRoute foo/web rule 0',
      matches: [{ path: { type: 'PathPrefix', value: '/api' }, headers: [{ name: 'x-v', type: 'Exact', value: '2' }], queryParams: [] }],
      filters: [{ type: 'RequestHeaderModifier', modifier: { set: [['X-A', '1']], add: [], remove: [] } }],
      backends: [{ service: 'foo/web-v2.foo.svc.cluster.local', port: 80, weight: 90, filters: [] }],
      fault: { abort: { status: 503, percent: 10 } },
    },
  ],
  tables: [{ port: 80, entries: [{ match: { path: { type: 'PathPrefix', value: '/api' }, headers: [], queryParams: [] }, rule: 0, hostnames: [] }] }],
  trafficPolicy: { loadBalancer: 'LEAST_REQUEST' },
  subsets: [{ name: 'v1', labels: { version: 'v1' } }],
};

function routesWith(mutate: (pb: PbServiceRoutes) => void, name = ROUTES.service): () => ServiceRoutes {
  const pb = serviceRoutesToProto(ROUTES);
  mutate(pb);
  return () => serviceRoutesFromProto(viaWire(codecs.serviceRoutes, pb), name);
}

const AUTHN: RequestAuthentication = {
  name: 'jwt', namespace: 'foo', scope: 'WORKLOAD_SELECTOR', selector: { app: 'web' },
  jwtRules: [{ issuer: 'https://issuer.example', audiences: [], jwks: '{"keys":[]}', fromHeaders: [{ name: 'x-jwt', prefix: '' }], fromParams: [], forwardOriginalToken: false }],
};

function authnWith(mutate: (pb: PbRequestAuthentication) => void, name = 'foo/jwt'): () => RequestAuthentication {
  const pb = requestAuthnToProto(AUTHN);
  mutate(pb);
  return () => requestAuthnFromProto(viaWire(codecs.requestAuthn, pb), name);
}

const HTTP: HttpAttributes = {
  methods: [{ exact: 'GET' }], notMethods: [], paths: [{ prefix: '/api/' }], notPaths: [], hosts: [], notHosts: [], requestPrincipals: [], notRequestPrincipals: [],
  remoteIps: [cidr(Buffer.from([10, 0, 0, 0]), 8)], notRemoteIps: [], headers: [{ key: 'x-team', values: [{ exact: 'a' }], notValues: [] }], claims: [],
};
const L4_MATCH: Match = {
  namespaces: [{ exact: 'bar' }], notNamespaces: [], principals: [], notPrincipals: [], serviceAccounts: [], notServiceAccounts: [],
  sourceIps: [], notSourceIps: [], destinationIps: [], notDestinationIps: [], destinationPorts: [], notDestinationPorts: [],
};
const AUTHZ: Authorization = {
  name: 'p', namespace: 'foo', scope: 'NAMESPACE', action: 'ALLOW', dryRun: false,
  rules: [],
  l7Rules: [{ clauses: [{ matches: [{ ...L4_MATCH, http: HTTP }] }] }],
};

function authzWith(mutate: (pb: PbAuthorization) => void): () => Authorization {
  const pb = authorizationToProto(AUTHZ);
  mutate(pb);
  return () => authorizationFromProto(viaWire(codecs.authorization, pb), 'foo/p');
}

describe('L7 resources are validated, and a rejection names the field', () => {
  it('ServiceRoutes', () => {
    expect(routesWith(() => {})()).toEqual(ROUTES); // the valid twin of every case below
    const r0 = (pb: PbServiceRoutes) => pb.rules![0]!;
    const cases: Array<[string, (pb: PbServiceRoutes) => void]> = [
      ['service', (pb) => (pb.service = '')],
      ['service', (pb) => (pb.service = 'web.foo.svc.cluster.local')],
      ['rules[0].matches[0].path.value', (pb) => (r0(pb).matches![0]!.path = { type: 'REGULAR_EXPRESSION', value: '/api/(' })],
      ['rules[0].matches[0].path.value', (pb) => (r0(pb).matches![0]!.path = { type: 'REGULAR_EXPRESSION', value: '/api)' })],
      ['rules[0].matches[0].path.value', (pb) => (r0(pb).matches![0]!.path = { type: 'REGULAR_EXPRESSION', value: '*/api' })],
      ['rules[0].matches[0].path.value', (pb) => (r0(pb).matches![0]!.path = { type: 'REGULAR_EXPRESSION', value: '/api\\' })],
      ['rules[0].matches[0].path.type', (pb) => (r0(pb).matches![0]!.path!.type = 'TYPE_UNSPECIFIED')],
      ['rules[0].matches[0].path.type', (pb) => (r0(pb).matches![0]!.path!.type = 9 as never)],
      ['rules[0].matches[0].headers[0].value', (pb) => Object.assign(r0(pb).matches![0]!.headers![0]!, { type: 'REGULAR_EXPRESSION', value: '[a-' })],
      ['rules[0].matches[0].headers[0].name', (pb) => (r0(pb).matches![0]!.headers![0]!.name = 'x v')],
      ['rules[0].matches[0].method', (pb) => (r0(pb).matches![0]!.method = '')],
      ['rules[0].backends[0].weight', (pb) => (r0(pb).backends![0]!.weight = 1_000_001)],
      ['rules[0].backends[0].port', (pb) => (r0(pb).backends![0]!.port = 70_000)],
      ['rules[0].backends[0].service', (pb) => (r0(pb).backends![0]!.service = 'web')],
      ['rules[0].filters[0]', (pb) => (r0(pb).filters![0] = {})],
      ['rules[0].filters[0].request_header_modifier.set[0].value', (pb) => (r0(pb).filters![0]!.requestHeaderModifier!.set![0]!.value = 'a\r\nb: c')],
      ['rules[0].filters[0].request_mirror.backend', (pb) => (r0(pb).filters![0] = { requestMirror: { percent: 5 } })],
      ['rules[0].filters[0].request_redirect.status_code', (pb) => (r0(pb).filters![0] = { requestRedirect: { statusCode: 200 } })],
      ['rules[0].fault.abort.percent', (pb) => (r0(pb).fault!.abort!.percent = 101)],
      ['rules[0].fault.abort.status', (pb) => (r0(pb).fault!.abort!.status = 99)],
      ['tables[0].entries[0].rule', (pb) => (pb.tables![0]!.entries![0]!.rule = 1)],
      ['tables[0].port', (pb) => (pb.tables![0]!.port = 0)],
      ['tables[1]', (pb) => pb.tables!.push({ ...pb.tables![0]!, entries: [] })],
      ['traffic_policy.load_balancer', (pb) => (pb.trafficPolicy!.loadBalancer = 9 as never)],
      ['subsets[1].name', (pb) => pb.subsets!.push({ name: 'v1', labels: {} })],
    ];
    for (const [field, mutate] of cases) expect(rejectedField(routesWith(mutate)), field).toBe(field);
    // The resource name must be the Service's key.
    expect(rejectedField(routesWith(() => {}, 'foo/other.foo.svc.cluster.local'))).toBe('service');
  });

  it('RequestAuthentication', () => {
    expect(authnWith(() => {})()).toEqual(AUTHN);
    const cases: Array<[string, (pb: PbRequestAuthentication) => void]> = [
      ['name', (pb) => (pb.name = 'other')],
      ['namespace', (pb) => (pb.namespace = '')],
      ['scope', (pb) => (pb.scope = 7 as never)],
      ['selector', (pb) => (pb.selector = {})],
      ['selector', (pb) => (pb.scope = 'NAMESPACE')],
      ['jwt_rules[0].issuer', (pb) => (pb.jwtRules![0]!.issuer = '')],
      ['jwt_rules[0].jwks', (pb) => (pb.jwtRules![0]!.jwks = '{"keys":')],
      ['jwt_rules[0].jwks', (pb) => (pb.jwtRules![0]!.jwks = '{"kty":"EC"}')],
      ['jwt_rules[0].from_headers[0].name', (pb) => (pb.jwtRules![0]!.fromHeaders![0]!.name = 'bad header')],
    ];
    for (const [field, mutate] of cases) expect(rejectedField(authnWith(mutate)), field).toBe(field);
    // GLOBAL may carry a selector (a root-namespace policy with one); NAMESPACE may not.
    expect(authnWith((pb) => (pb.scope = 'GLOBAL'))()).toMatchObject({ scope: 'GLOBAL', selector: { app: 'web' } });
  });

  it('Authorization.l7_rules, and HTTP attributes outside them', () => {
    expect(authzWith(() => {})()).toEqual(AUTHZ);
    const m = (pb: PbAuthorization) => pb.l7Rules![0]!.clauses[0]!.matches[0]!;
    const cases: Array<[string, (pb: PbAuthorization) => void]> = [
      // In the L4 rules a stock ztunnel would skip `http` and match more than meant.
      ['rules[0].clauses[0].matches[0].http', (pb) => (pb.rules = pb.l7Rules!)],
      ['l7_rules[0].clauses[0].matches[0].http.remote_ips[0]', (pb) => (m(pb).http!.remoteIps![0] = { address: Buffer.from([10, 0, 0]), length: 8 })],
      ['l7_rules[0].clauses[0].matches[0].http.headers[0].key', (pb) => (m(pb).http!.headers![0]!.key = 'X-Team')],
      ['l7_rules[0].clauses[0].matches[0].http.methods[0]', (pb) => (m(pb).http!.methods![0] = {})],
      ['l7_rules[0].clauses[0].matches[0].http.claims[0].key', (pb) => (m(pb).http!.claims = [{ key: '', values: [] }])],
    ];
    for (const [field, mutate] of cases) expect(rejectedField(authzWith(mutate)), field).toBe(field);
    // An empty l7_rules is no l7Rules: the L4 rules serve HTTP ports too.
    expect(authzWith((pb) => (pb.l7Rules = []))()).not.toHaveProperty('l7Rules');
  });

  it('Workload.labels', () => {
    expect(rejectedField(() => workloadFromProto(viaWire(codecs.address, { workload: { ...WEB, labels: { '': 'x' } } }).workload!, WEB.uid))).toBe('labels');
    expect(workloadFromProto(viaWire(codecs.address, { workload: { ...WEB, labels: { app: 'web' } } }).workload!, WEB.uid).labels).toEqual({ app: 'web' });
  });
});

// ---- field numbers ----------------------------------------------------------------------

function ids(type: string): Record<string, number> {
  return Object.fromEntries(Object.values(protoRoot().lookupType(type).fields).map((f) => [f.name, f.id]));
}

describe('wire numbers of the nodemesh extensions and L7 types', () => {
  it('extends Istio messages only at 1000 and up, which Istio leaves unused', () => {
    expect(ids('istio.workload.Workload').labels).toBe(1000);
    expect(ids('istio.security.Authorization').l7Rules).toBe(1000);
    expect(ids('istio.security.Match').http).toBe(1000);
    expect(ids('istio.security.HttpAttributes')).toEqual({
      methods: 1, notMethods: 2, paths: 3, notPaths: 4, hosts: 5, notHosts: 6, requestPrincipals: 7, notRequestPrincipals: 8, remoteIps: 9, notRemoteIps: 10, headers: 11, claims: 12,
    });
    expect(ids('istio.security.ValueCondition')).toEqual({ key: 1, values: 2, notValues: 3 });
  });

  it('nodemesh.v1.ServiceRoutes and RequestAuthentication', () => {
    expect(ids('nodemesh.v1.ServiceRoutes')).toEqual({ service: 1, rules: 2, tables: 3, trafficPolicy: 4, subsets: 5 });
    expect(ids('nodemesh.v1.RouteRule')).toEqual({ source: 1, matches: 2, filters: 3, backends: 4, timeoutMs: 5, backendTimeoutMs: 6, retry: 7, fault: 8 });
    expect(ids('nodemesh.v1.RouteFilter')).toEqual({ requestHeaderModifier: 1, responseHeaderModifier: 2, urlRewrite: 3, requestRedirect: 4, requestMirror: 5 });
    expect(ids('nodemesh.v1.BackendRef')).toEqual({ service: 1, port: 2, weight: 3, subset: 4, filters: 5 });
    expect(ids('nodemesh.v1.RouteTable')).toEqual({ port: 1, consumerNamespace: 2, entries: 3 });
    expect(ids('nodemesh.v1.RequestAuthentication')).toEqual({ name: 1, namespace: 2, scope: 3, selector: 4, jwtRules: 5 });
    expect(ids('nodemesh.v1.JwtRule')).toEqual({ issuer: 1, audiences: 2, jwks: 3, fromHeaders: 4, fromParams: 5, forwardOriginalToken: 6 });
  });
});
