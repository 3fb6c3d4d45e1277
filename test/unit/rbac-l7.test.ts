// L7 authorization: AuthorizationPolicy YAML → l7Rules → a decision per HTTP request, on the
// attributes of Istio's AuthorizationPolicy and Conditions references; and the same policies on
// L4 ports (no request), where the conservative rules still decide.
import { describe, expect, it } from 'vitest';
import { buildPolicySet } from '../../src/controlplane/authz.js';
import type { AuthorizationPolicy } from '../../src/controlplane/resources.js';
import { DEFAULT_MESH } from '../../src/controlplane/translate.js';
import { parseConfigFile, type ConfigProblem } from '../../src/controlplane/validate.js';
import type { Pod } from '../../src/k8s/index.js';
import { evaluate } from '../../src/rbac/index.js';
import type { Authorization, Connection, Decision, HttpRequestFacts } from '../../src/state/index.js';
import { selectPolicies } from '../../src/state/policy.js';
import { authorizationFromProto, codecs } from '../../src/xds/index.js';

const PODS = `apiVersion: v1
kind: Pod
metadata: {name: httpbin, namespace: foo, labels: {app: httpbin}}
spec:
  containers: [{name: main, command: [httpbin]}]
status: {podIP: 10.0.0.10}
`;

function ap(name: string, spec: string, annotations = ''): string {
  const body = spec.split('\n').map((l) => (l ? `  ${l}` : l)).join('\n');
  return `apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: ${name}\n  namespace: foo\n${annotations ? `  annotations:\n    ${annotations}\n` : ''}spec:\n${body}\n`;
}

interface Req {
  method?: string;
  path?: string;
  host?: string;
  headers?: Record<string, string>;
  principal?: string;
  claims?: Record<string, unknown>;
  remoteIp?: string;
  /** Connection fields. */
  from?: string;
  port?: number;
  srcIp?: string;
}

const FROM_FOO = 'spiffe://cluster.local/ns/foo/sa/client';
const FROM_BAR = 'spiffe://cluster.local/ns/bar/sa/client';

function facts(r: Req): HttpRequestFacts {
  const h = Object.fromEntries(Object.entries(r.headers ?? {}).map(([k, v]) => [k.toLowerCase(), v]));
  return {
    method: r.method ?? 'GET',
    path: r.path ?? '/',
    host: r.host ?? 'httpbin.foo',
    header: (n) => h[n],
    ...(r.principal ? { requestPrincipal: r.principal } : {}),
    ...(r.claims ? { claims: r.claims } : {}),
    ...(r.remoteIp ? { remoteIp: r.remoteIp } : {}),
  };
}

interface World {
  problems: ConfigProblem[];
  policies: Authorization[];
  /** A request on an HTTP port. */
  request(r: Req): Decision;
  /** A bare connection on an L4 port. */
  connection(r: Req): Decision;
}

/** YAML through the real translation and the xDS encoding of the L4 rules; l7Rules as served beside them. */
function world(...docs: string[]): World {
  const parsed = parseConfigFile([PODS, ...docs].join('---\n'), 'test.yaml');
  expect(parsed.problems).toEqual([]);
  const aps = parsed.objects.filter((o): o is AuthorizationPolicy => o.kind === 'AuthorizationPolicy');
  const pod = parsed.objects.find((o): o is Pod => o.kind === 'Pod')!;
  const set = buildPolicySet(aps, [], DEFAULT_MESH);
  const policies = set.authorizations.map((a): Authorization => {
    const key = `${a.namespace}/${a.name}`;
    const l7Rules = set.l7Rules.get(key);
    return { ...authorizationFromProto(codecs.authorization.decode(codecs.authorization.encode(a)), key), ...(l7Rules ? { l7Rules } : {}) };
  });
  const applicable = selectPolicies(policies, { namespace: 'foo', authorizationPolicies: set.policiesFor(pod) });
  const conn = (r: Req): Connection => ({ ...(r.from !== '' ? { srcPrincipal: r.from ?? FROM_FOO } : {}), srcIp: r.srcIp ?? '10.0.2.1', dstIp: '10.0.0.10', dstPort: r.port ?? 8000 });
  return {
    problems: set.problems,
    policies,
    request: (r) => evaluate(applicable, { ...conn(r), http: facts(r) }),
    connection: (r) => evaluate(applicable, conn(r)),
  };
}

interface Case {
  name: string;
  /** The policies, as AuthorizationPolicy specs in namespace foo. */
  specs: string[];
  allowed: Req[];
  denied: Req[];
}

const allowOp = (op: string) => `rules:\n- to:\n  - operation:\n      ${op}`;
const allowWhen = (key: string, values: string, not = false) => `rules:\n- when:\n  - key: ${key}\n    ${not ? 'notValues' : 'values'}: ${values}`;
const allowFrom = (src: string) => `rules:\n- from:\n  - source:\n      ${src}`;

const OPERATION: Case[] = [
  { name: 'methods', specs: [allowOp('methods: ["GET", "HEAD"]')], allowed: [{ method: 'GET' }, { method: 'HEAD' }], denied: [{ method: 'POST' }, { method: 'get' }] },
  { name: 'notMethods', specs: [allowOp('notMethods: ["DELETE"]')], allowed: [{ method: 'GET' }], denied: [{ method: 'DELETE' }] },
  { name: 'paths exact', specs: [allowOp('paths: ["/info"]')], allowed: [{ path: '/info' }], denied: [{ path: '/info/' }, { path: '/Info' }] },
  { name: 'paths prefix', specs: [allowOp('paths: ["/api/*"]')], allowed: [{ path: '/api/' }, { path: '/api/v1/x' }], denied: [{ path: '/api' }, { path: '/apix' }] },
  { name: 'paths suffix', specs: [allowOp('paths: ["*.png"]')], allowed: [{ path: '/img/a.png' }], denied: [{ path: '/img/a.jpg' }] },
  { name: 'paths presence, with a source', specs: ['rules:\n- from:\n  - source:\n      namespaces: ["foo"]\n  to:\n  - operation:\n      paths: ["*"]'], allowed: [{ path: '/' }], denied: [{ path: '/', from: FROM_BAR }] },
  { name: 'notPaths', specs: [allowOp('notPaths: ["/admin*"]')], allowed: [{ path: '/x' }], denied: [{ path: '/admin' }, { path: '/admin/users' }] },
  { name: 'hosts, case-insensitive, port included', specs: [allowOp('hosts: ["httpbin.foo", "*.Example.com"]')], allowed: [{ host: 'HTTPBIN.foo' }, { host: 'api.example.COM' }], denied: [{ host: 'httpbin.foo:8000' }, { host: 'httpbin.bar' }] },
  { name: 'hosts prefix with a port', specs: [allowOp('hosts: ["httpbin.foo:*"]')], allowed: [{ host: 'httpbin.foo:8000' }], denied: [{ host: 'httpbin.foo' }] },
  { name: 'notHosts', specs: [allowOp('notHosts: ["evil.foo"]')], allowed: [{ host: 'httpbin.foo' }], denied: [{ host: 'EVIL.foo' }] },
  { name: 'ports stay L4 fields next to methods', specs: [allowOp('ports: ["8000"]\n      methods: ["GET"]')], allowed: [{ method: 'GET', port: 8000 }], denied: [{ method: 'GET', port: 9000 }, { method: 'PUT', port: 8000 }] },
  {
    name: 'operations OR-ed',
    specs: ['rules:\n- to:\n  - operation:\n      methods: ["GET"]\n  - operation:\n      paths: ["/upload"]'],
    allowed: [{ method: 'GET', path: '/x' }, { method: 'POST', path: '/upload' }],
    denied: [{ method: 'POST', path: '/x' }],
  },
];

const SOURCE: Case[] = [
  { name: 'requestPrincipals exact', specs: [allowFrom('requestPrincipals: ["https://iss.example/alice"]')], allowed: [{ principal: 'https://iss.example/alice' }], denied: [{ principal: 'https://iss.example/bob' }, {}] },
  { name: 'requestPrincipals iss/* and */sub', specs: [allowFrom('requestPrincipals: ["https://iss.example/*", "*/carol"]')], allowed: [{ principal: 'https://iss.example/bob' }, { principal: 'https://other/carol' }], denied: [{ principal: 'https://other/bob' }] },
  { name: 'requestPrincipals * (any validated JWT)', specs: [allowFrom('requestPrincipals: ["*"]')], allowed: [{ principal: 'a/b' }], denied: [{}] },
  { name: 'notRequestPrincipals', specs: [allowFrom('notRequestPrincipals: ["https://iss.example/mallory"]')], allowed: [{ principal: 'https://iss.example/alice' }, {}], denied: [{ principal: 'https://iss.example/mallory' }] },
  { name: 'remoteIpBlocks, X-Forwarded-For origin first', specs: [allowFrom('remoteIpBlocks: ["192.0.2.0/24"]')], allowed: [{ remoteIp: '192.0.2.7' }, { srcIp: '192.0.2.9' }], denied: [{ remoteIp: '198.51.100.1', srcIp: '192.0.2.9' }] },
  { name: 'notRemoteIpBlocks', specs: [allowFrom('notRemoteIpBlocks: ["192.0.2.0/24"]')], allowed: [{ remoteIp: '198.51.100.1' }], denied: [{ remoteIp: '192.0.2.7' }] },
  { name: 'an L4 source field AND a request principal in one source', specs: [allowFrom('namespaces: ["foo"]\n      requestPrincipals: ["*"]')], allowed: [{ principal: 'a/b' }], denied: [{ principal: 'a/b', from: FROM_BAR }, {}] },
];

const WHEN: Case[] = [
  { name: 'request.headers values', specs: [allowWhen('request.headers[X-Token]', '["abc", "v1-*"]')], allowed: [{ headers: { 'x-token': 'abc' } }, { headers: { 'x-token': 'v1-9' } }], denied: [{ headers: { 'x-token': 'abd' } }, {}] },
  { name: 'request.headers notValues (absent passes)', specs: [allowWhen('request.headers[x-env]', '["prod"]', true)], allowed: [{}, { headers: { 'x-env': 'dev' } }], denied: [{ headers: { 'x-env': 'prod' } }] },
  { name: 'request.headers presence (an empty value counts)', specs: [allowWhen('request.headers[x-debug]', '["*"]')], allowed: [{ headers: { 'x-debug': '' } }, { headers: { 'x-debug': '1' } }], denied: [{}] },
  { name: 'claims: a string or a list of strings', specs: [allowWhen('request.auth.claims[groups]', '["admin"]')], allowed: [{ claims: { groups: ['dev', 'admin'] } }, { claims: { groups: 'admin' } }], denied: [{ claims: { groups: ['dev'] } }, { claims: { groups: 1 } }, {}] },
  { name: 'claims nested [a][b]', specs: [allowWhen('request.auth.claims[org][team]', '["al*"]')], allowed: [{ claims: { org: { team: 'alpha' } } }], denied: [{ claims: { org: { team: 'beta' } } }, { claims: { 'org.team': 'alpha' } }, { claims: { org: 'alpha' } }] },
  { name: 'claims named with a dot', specs: [allowWhen('request.auth.claims[https://ex.com/role]', '["ops"]')], allowed: [{ claims: { 'https://ex.com/role': 'ops' } }], denied: [{ claims: { https: { 'ex.com/role': 'ops' } } }] },
  { name: 'claims never read inherited properties', specs: [allowWhen('request.auth.claims[constructor][name]', '["Object"]')], allowed: [{ claims: { constructor: { name: 'Object' } } }], denied: [{ claims: {} }] },
  { name: 'claims notValues', specs: [allowWhen('request.auth.claims[groups]', '["banned"]', true)], allowed: [{ claims: { groups: ['dev'] } }, {}], denied: [{ claims: { groups: ['dev', 'banned'] } }] },
  { name: 'request.auth.audiences (aud)', specs: [allowWhen('request.auth.audiences', '["httpbin"]')], allowed: [{ claims: { aud: ['x', 'httpbin'] } }, { claims: { aud: 'httpbin' } }], denied: [{ claims: { aud: 'other' } }] },
  { name: 'request.auth.presenter (azp)', specs: [allowWhen('request.auth.presenter', '["web-app"]')], allowed: [{ claims: { azp: 'web-app' } }], denied: [{ claims: { azp: 'cli' } }] },
  { name: 'request.auth.principal', specs: [allowWhen('request.auth.principal', '["iss/alice"]')], allowed: [{ principal: 'iss/alice' }], denied: [{ principal: 'iss/bob' }] },
  { name: 'remote.ip', specs: [allowWhen('remote.ip', '["203.0.113.0/24"]')], allowed: [{ remoteIp: '203.0.113.5' }], denied: [{ remoteIp: '203.0.114.5' }] },
  { name: 'L4 keys still apply per request', specs: [allowWhen('source.namespace', '["foo"]')], allowed: [{}], denied: [{ from: FROM_BAR }] },
  {
    name: 'conditions AND-ed with the operation',
    specs: ['rules:\n- to:\n  - operation:\n      methods: ["POST"]\n  when:\n  - key: request.headers[x-csrf]\n    values: ["*"]'],
    allowed: [{ method: 'POST', headers: { 'x-csrf': 't' } }],
    denied: [{ method: 'POST' }, { method: 'GET', headers: { 'x-csrf': 't' } }],
  },
];

const DENY: Case[] = [
  {
    name: 'DENY on a path wins over ALLOW all',
    specs: ['rules:\n- {}', 'action: DENY\nrules:\n- to:\n  - operation:\n      paths: ["/admin*"]'],
    allowed: [{ path: '/status' }],
    denied: [{ path: '/admin' }, { path: '/admin/x' }],
  },
  {
    name: 'DENY requests without a request principal (notRequestPrincipals *)',
    specs: ['action: DENY\nrules:\n- from:\n  - source:\n      notRequestPrincipals: ["*"]'],
    allowed: [{ principal: 'iss/alice' }],
    denied: [{}],
  },
  {
    name: 'DENY on a header from one namespace only',
    specs: ['action: DENY\nrules:\n- from:\n  - source:\n      namespaces: ["bar"]\n  when:\n  - key: request.headers[x-evil]\n    values: ["1"]'],
    allowed: [{ headers: { 'x-evil': '1' } }, { from: FROM_BAR }],
    denied: [{ from: FROM_BAR, headers: { 'x-evil': '1' } }],
  },
  {
    name: 'DENY on a claim beside an ALLOW on a method',
    specs: [allowOp('methods: ["GET"]'), 'action: DENY\nrules:\n- when:\n  - key: request.auth.claims[role]\n    values: ["guest"]'],
    allowed: [{ method: 'GET', claims: { role: 'user' } }],
    denied: [{ method: 'GET', claims: { role: 'guest' } }, { method: 'POST', claims: { role: 'user' } }],
  },
];

describe('L7 AuthorizationPolicy per request', () => {
  for (const [group, cases] of [['to.operation', OPERATION], ['from.source', SOURCE], ['when', WHEN], ['DENY and ALLOW', DENY]] as const) {
    describe(group, () => {
      it.each(cases)('$name', ({ specs, allowed, denied }) => {
        const w = world(...specs.map((s, i) => ap(`p${i}`, s)));
        for (const r of allowed) expect(w.request(r), JSON.stringify(r)).toMatchObject({ allowed: true });
        for (const r of denied) expect(w.request(r), JSON.stringify(r)).toMatchObject({ allowed: false });
      });
    });
  }

  it('names the deciding policy and reason per request', () => {
    const w = world(ap('allow-get', allowOp('methods: ["GET"]')), ap('deny-admin', 'action: DENY\nrules:\n- to:\n  - operation:\n      paths: ["/admin"]'));
    expect(w.request({ method: 'GET', path: '/admin' })).toEqual({ allowed: false, policy: 'foo/deny-admin', reason: 'denied-by-policy', dryRun: [] });
    expect(w.request({ method: 'GET', path: '/x' })).toEqual({ allowed: true, policy: 'foo/allow-get', reason: 'allowed-by-policy', dryRun: [] });
    expect(w.request({ method: 'PUT', path: '/x' })).toEqual({ allowed: false, reason: 'no-allow-match', dryRun: [] });
  });

  it('reports a dry-run L7 DENY without enforcing it, and only when the request matches', () => {
    const w = world(ap('dry', 'action: DENY\nrules:\n- to:\n  - operation:\n      methods: ["DELETE"]', 'istio.io/dry-run: "true"'));
    expect(w.request({ method: 'DELETE' })).toEqual({ allowed: true, reason: 'no-allow-policy', dryRun: [{ policy: 'foo/dry', action: 'DENY' }] });
    expect(w.request({ method: 'GET' })).toEqual({ allowed: true, reason: 'no-allow-policy', dryRun: [] });
  });

  it('decides requests on the L4 rules of a policy without HTTP attributes', () => {
    const w = world(ap('from-foo', allowFrom('namespaces: ["foo"]')));
    expect(w.policies.find((p) => p.name === 'from-foo')!.l7Rules).toBeUndefined();
    expect(w.request({}).allowed).toBe(true);
    expect(w.request({ from: FROM_BAR }).allowed).toBe(false);
  });

  it('a DENY rule with an unsupported when key is kept without it on HTTP ports (denies more)', () => {
    const w = world(ap('deny', 'action: DENY\nrules:\n- to:\n  - operation:\n      paths: ["/admin"]\n  when:\n  - key: connection.sni\n    values: ["x.example"]'));
    expect(w.problems).toContainEqual(expect.objectContaining({ severity: 'error', message: expect.stringContaining('"connection.sni"') }));
    expect(w.request({ path: '/admin' }).allowed).toBe(false);
    expect(w.request({ path: '/other' }).allowed).toBe(true);
  });
});

describe('the same policies on L4 ports (no request)', () => {
  it('an ALLOW with HTTP fields allows nothing at L4, and its requests by their fields', () => {
    const w = world(ap('get-only', allowOp('methods: ["GET"]')));
    expect(w.connection({})).toMatchObject({ allowed: false, reason: 'no-allow-match' });
    expect(w.request({ method: 'GET' })).toMatchObject({ allowed: true, policy: 'foo/get-only' });
    expect(w.request({ method: 'POST' }).allowed).toBe(false);
  });

  it('an ALLOW keeps its L4-only rules at L4', () => {
    const w = world(ap('mixed', 'rules:\n- to:\n  - operation:\n      methods: ["GET"]\n- from:\n  - source:\n      namespaces: ["foo"]'));
    expect(w.connection({}).allowed).toBe(true);
    expect(w.connection({ from: FROM_BAR }).allowed).toBe(false);
    expect(w.request({ from: FROM_BAR, method: 'GET' }).allowed).toBe(true);
    expect(w.request({ from: FROM_BAR, method: 'POST' }).allowed).toBe(false);
  });

  it('a DENY with HTTP fields matches broadly at L4 and exactly per request', () => {
    const w = world(ap('deny-admin', 'action: DENY\nrules:\n- from:\n  - source:\n      namespaces: ["bar"]\n  to:\n  - operation:\n      paths: ["/admin"]'));
    expect(w.connection({ from: FROM_BAR })).toMatchObject({ allowed: false, policy: 'foo/deny-admin' });
    expect(w.connection({ from: FROM_FOO }).allowed).toBe(true);
    expect(w.request({ from: FROM_BAR, path: '/admin' })).toMatchObject({ allowed: false, policy: 'foo/deny-admin' });
    expect(w.request({ from: FROM_BAR, path: '/public' }).allowed).toBe(true);
  });

  it('a header-only DENY denies every connection at L4 and only matching requests', () => {
    const w = world(ap('deny-header', 'action: DENY\nrules:\n- when:\n  - key: request.headers[x-evil]\n    values: ["1"]'));
    expect(w.connection({}).allowed).toBe(false);
    expect(w.request({ headers: { 'x-evil': '1' } }).allowed).toBe(false);
    expect(w.request({ headers: { 'x-evil': '0' } }).allowed).toBe(true);
  });
});
