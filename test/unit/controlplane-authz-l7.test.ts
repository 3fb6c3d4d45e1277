// The control plane's L7 translation: AuthorizationPolicy → l7Rules (state form) beside the
// conservative L4 rules, and RequestAuthentication validation (by field path) and scoping.
import { describe, expect, it } from 'vitest';
import { buildPolicySet, translateAuthorizationPolicy } from '../../src/controlplane/authz.js';
import { l7RulesOf } from '../../src/controlplane/authz-l7.js';
import { translateRequestAuthentications } from '../../src/controlplane/request-authn.js';
import type { AuthorizationPolicy } from '../../src/controlplane/resources.js';
import { DEFAULT_MESH } from '../../src/controlplane/translate.js';
import { parseConfigFile } from '../../src/controlplane/validate.js';
import type { K8sObject } from '../../src/k8s/index.js';
import { requestAuthnFor } from '../../src/rbac/request-authn.js';
import type { HttpAttributes, Match } from '../../src/state/index.js';

function policy(spec: string, ns = 'foo', name = 'p'): AuthorizationPolicy {
  const body = spec.split('\n').map((l) => `  ${l}`).join('\n');
  const parsed = parseConfigFile(`apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: ${name}\n  namespace: ${ns}\nspec:\n${body}\n`, 'p.yaml');
  expect(parsed.problems).toEqual([]);
  return parsed.objects[0] as AuthorizationPolicy;
}

const L4: Omit<Match, 'http'> = {
  namespaces: [], notNamespaces: [], principals: [], notPrincipals: [], serviceAccounts: [], notServiceAccounts: [],
  sourceIps: [], notSourceIps: [], destinationIps: [], notDestinationIps: [], destinationPorts: [], notDestinationPorts: [],
};
const HTTP: HttpAttributes = {
  methods: [], notMethods: [], paths: [], notPaths: [], hosts: [], notHosts: [], requestPrincipals: [], notRequestPrincipals: [],
  remoteIps: [], notRemoteIps: [], headers: [], claims: [],
};
const m = (l4: Partial<Match>, http?: Partial<HttpAttributes>): Match => ({ ...L4, ...l4, ...(http ? { http: { ...HTTP, ...http } } : {}) });

describe('AuthorizationPolicy → l7Rules', () => {
  it('has none for a policy without HTTP attributes', () => {
    expect(l7RulesOf(policy('rules:\n- from:\n  - source:\n      namespaces: ["a"]'))).toBeUndefined();
    expect(l7RulesOf(policy('rules:\n- to:\n  - operation:\n      methods: ["GET"]'))).toHaveLength(1);
  });

  it('keeps every operation field and its not form; ports stay L4 fields', () => {
    const rules = l7RulesOf(policy('rules:\n- to:\n  - operation:\n      ports: ["80"]\n      notPorts: ["81"]\n      methods: ["GET"]\n      notMethods: ["PUT"]\n      paths: ["/a", "/b*", "*.c", "*"]\n      notPaths: ["/x"]\n      hosts: ["h.example"]\n      notHosts: ["*.bad"]'));
    expect(rules).toEqual([
      {
        clauses: [
          {
            matches: [
              m(
                { destinationPorts: [80], notDestinationPorts: [81] },
                {
                  methods: [{ exact: 'GET' }], notMethods: [{ exact: 'PUT' }],
                  paths: [{ exact: '/a' }, { prefix: '/b' }, { suffix: '.c' }, { presence: true }], notPaths: [{ exact: '/x' }],
                  hosts: [{ exact: 'h.example' }], notHosts: [{ suffix: '.bad' }],
                },
              ),
            ],
          },
        ],
      },
    ]);
  });

  it('keeps source request principals and remote IPs beside the L4 source fields', () => {
    const rules = l7RulesOf(policy('rules:\n- from:\n  - source:\n      namespaces: ["a"]\n      serviceAccounts: ["sa", "b/sb"]\n      requestPrincipals: ["iss/*"]\n      notRequestPrincipals: ["iss/bad"]\n      remoteIpBlocks: ["10.0.0.0/8"]\n      notRemoteIpBlocks: ["10.1.0.0/16"]'));
    const match = rules![0]!.clauses[0]!.matches[0]!;
    expect(match.namespaces).toEqual([{ exact: 'a' }]);
    expect(match.serviceAccounts).toEqual([{ namespace: 'foo', serviceAccount: 'sa' }, { namespace: 'b', serviceAccount: 'sb' }]);
    expect(match.http).toMatchObject({ requestPrincipals: [{ prefix: 'iss/' }], notRequestPrincipals: [{ exact: 'iss/bad' }] });
    expect(match.http!.remoteIps).toEqual([{ bytes: Buffer.from([10, 0, 0, 0]), prefixLen: 8 }]);
    expect(match.http!.notRemoteIps).toEqual([{ bytes: Buffer.from([10, 1, 0, 0]), prefixLen: 16 }]);
  });

  it('turns each when key into its own clause: headers, claims (nested), audiences, presenter, principal, remote.ip, L4 keys', () => {
    const when = [
      ['request.headers[X-User]', '["a*"]', '["admin"]'],
      ['request.auth.claims[groups]', '["dev"]', '[]'],
      ['request.auth.claims[org][team]', '["x"]', '[]'],
      ['request.auth.claims[a.b]', '["y"]', '[]'],
      ['request.auth.audiences', '["svc"]', '[]'],
      ['request.auth.presenter', '["app"]', '[]'],
      ['request.auth.principal', '["iss/sub"]', '[]'],
      ['remote.ip', '["192.0.2.1"]', '[]'],
      ['destination.port', '["8080"]', '[]'],
    ]
      .map(([k, v, n]) => `  - key: ${k}\n    values: ${v}\n    notValues: ${n}`)
      .join('\n');
    const rules = l7RulesOf(policy(`rules:\n- when:\n${when}`));
    expect(rules![0]!.clauses.map((c) => c.matches)).toEqual([
      [m({}, { headers: [{ key: 'x-user', values: [{ prefix: 'a' }], notValues: [{ exact: 'admin' }] }] })],
      [m({}, { claims: [{ key: 'groups', values: [{ exact: 'dev' }], notValues: [] }] })],
      [m({}, { claims: [{ key: 'org.team', values: [{ exact: 'x' }], notValues: [] }] })],
      [m({}, { claims: [{ key: 'a\\.b', values: [{ exact: 'y' }], notValues: [] }] })],
      [m({}, { claims: [{ key: 'aud', values: [{ exact: 'svc' }], notValues: [] }] })],
      [m({}, { claims: [{ key: 'azp', values: [{ exact: 'app' }], notValues: [] }] })],
      [m({}, { requestPrincipals: [{ exact: 'iss/sub' }] })],
      [m({}, { remoteIps: [{ bytes: Buffer.from([192, 0, 2, 1]), prefixLen: 32 }] })],
      [m({ destinationPorts: [8080] })],
    ]);
  });

  it('reports an unknown when key as an error naming it, and never allows more for it', () => {
    const allow = translateAuthorizationPolicy(policy('rules:\n- to:\n  - operation:\n      methods: ["GET"]\n  when:\n  - key: connection.sni\n    values: ["a.example"]\n- to:\n  - operation:\n      methods: ["HEAD"]'), DEFAULT_MESH);
    expect(allow.problems.filter((p) => p.severity === 'error')).toEqual([
      expect.objectContaining({ code: 'NM_ERR_POLICY', line: 8, message: expect.stringMatching(/rule 0 uses when key "connection\.sni".*ALLOW rule is left out/) }),
    ]);
    expect(allow.l7Rules).toEqual([{ clauses: [{ matches: [m({}, { methods: [{ exact: 'HEAD' }] })] }] }]);
    const deny = translateAuthorizationPolicy(policy('action: DENY\nrules:\n- to:\n  - operation:\n      methods: ["GET"]\n  when:\n  - key: experimental.envoy.filters.x[y]\n    values: ["1"]'), DEFAULT_MESH);
    expect(deny.problems.find((p) => p.severity === 'error')!.message).toMatch(/"experimental\.envoy\.filters\.x\[y\]".*DENY rule is enforced without it/);
    expect(deny.l7Rules).toEqual([{ clauses: [{ matches: [m({}, { methods: [{ exact: 'GET' }] })] }] }]);
    // A header name that is no HTTP token (a pseudo-header) cannot be matched either.
    const pseudo = translateAuthorizationPolicy(policy('rules:\n- when:\n  - key: request.headers[:authority]\n    values: ["a"]\n- when:\n  - key: request.headers[x-ok]\n    values: ["a"]'), DEFAULT_MESH);
    expect(pseudo.problems.find((p) => p.severity === 'error')!.message).toMatch(/rule 0 uses when key "request\.headers\[:authority\]"/);
    expect(pseudo.l7Rules).toEqual([{ clauses: [{ matches: [m({}, { headers: [{ key: 'x-ok', values: [{ exact: 'a' }], notValues: [] }] })] }] }]);
  });

  it('a path template is an error: an ALLOW rule is left out, a DENY loses the whole paths field', () => {
    const allow = translateAuthorizationPolicy(policy('rules:\n- to:\n  - operation:\n      paths: ["/a/{*}/b"]'), DEFAULT_MESH);
    expect(allow.problems.some((p) => p.severity === 'error' && p.message.includes('"/a/{*}/b"'))).toBe(true);
    expect(allow.l7Rules).toEqual([]);
    const deny = translateAuthorizationPolicy(policy('action: DENY\nrules:\n- to:\n  - operation:\n      paths: ["/x", "/a/{**}"]\n      methods: ["POST"]\n  - operation:\n      paths: ["/y/{*}"]'), DEFAULT_MESH);
    // The second operation lost its only field: it matches any request, so the clause goes.
    expect(deny.l7Rules).toEqual([{ clauses: [] }]);
    const deny2 = translateAuthorizationPolicy(policy('action: DENY\nrules:\n- to:\n  - operation:\n      paths: ["/x", "/a/{**}"]\n      methods: ["POST"]'), DEFAULT_MESH);
    expect(deny2.l7Rules).toEqual([{ clauses: [{ matches: [m({}, { methods: [{ exact: 'POST' }] })] }] }]);
  });

  it('keeps the L4 rules as before, and the warnings say where HTTP attributes are enforced', () => {
    const t = translateAuthorizationPolicy(policy('rules:\n- to:\n  - operation:\n      methods: ["GET"]\n- from:\n  - source:\n      namespaces: ["foo"]'), DEFAULT_MESH);
    expect(t.authorization!.rules).toEqual([{ clauses: [{ matches: [{ namespaces: [{ exact: 'foo' }] }] }] }]);
    expect(t.l7Rules).toHaveLength(2);
    expect(t.problems).toEqual([expect.objectContaining({ severity: 'warning', message: expect.stringMatching(/to\.operation\.methods\): they are enforced on HTTP ports .*appProtocol http, http2 or grpc.*on L4 ports the ALLOW rule is left out/) })]);
  });

  it('buildPolicySet serves l7Rules by ns/name beside the authorizations', () => {
    const set = buildPolicySet([policy('rules:\n- to:\n  - operation:\n      methods: ["GET"]', 'foo', 'http'), policy('rules:\n- {}', 'foo', 'l4')], [], DEFAULT_MESH);
    expect([...set.l7Rules.keys()]).toEqual(['foo/http']);
    expect(set.authorizations.map((a) => a.name).sort()).toEqual(['http', 'istio_converted_static_strict', 'l4']);
    expect(set.authorizations.find((a) => a.name === 'http')!.rules).toEqual([]);
  });
});

function ra(spec: string, ns = 'foo', name = 'jwt', apiVersion = 'security.istio.io/v1'): K8sObject {
  const parsed = parseConfigFile(`apiVersion: ${apiVersion}\nkind: RequestAuthentication\nmetadata:\n  name: ${name}\n  namespace: ${ns}\nspec:\n${spec.split('\n').map((l) => `  ${l}`).join('\n')}\n`, 'ra.yaml');
  expect(parsed.problems).toEqual([]);
  return parsed.objects[0] as K8sObject;
}

const JWKS = JSON.stringify({ keys: [{ kty: 'EC', crv: 'P-256', x: 'x', y: 'y' }] });
const RULE = `issuer: https://iss.example\n  jwks: '${JWKS}'`;

describe('RequestAuthentication', () => {
  it('translates jwtRules with their defaults and options', () => {
    const { authns, problems } = translateRequestAuthentications(
      [ra(`jwtRules:\n- ${RULE}\n  audiences: [a, b]\n  fromHeaders:\n  - name: X-Jwt\n    prefix: "Bearer "\n  - name: x-raw\n  fromParams: [tok]\n  forwardOriginalToken: true\n- issuer: other\n  jwks: '${JWKS}'`, 'foo', 'jwt', 'security.istio.io/v1beta1')],
      DEFAULT_MESH,
    );
    expect(problems).toEqual([]);
    expect(authns).toEqual([
      {
        name: 'jwt', namespace: 'foo', scope: 'NAMESPACE',
        jwtRules: [
          { issuer: 'https://iss.example', audiences: ['a', 'b'], jwks: JWKS, fromHeaders: [{ name: 'x-jwt', prefix: 'Bearer ' }, { name: 'x-raw', prefix: '' }], fromParams: ['tok'], forwardOriginalToken: true },
          { issuer: 'other', audiences: [], jwks: JWKS, fromHeaders: [], fromParams: [], forwardOriginalToken: false },
        ],
      },
    ]);
  });

  it('scopes: root namespace GLOBAL, a namespace NAMESPACE, a selector WORKLOAD_SELECTOR (GLOBAL with it in the root)', () => {
    const { authns } = translateRequestAuthentications(
      [
        ra(`jwtRules:\n- ${RULE}`, 'istio-system', 'mesh'),
        ra(`jwtRules:\n- ${RULE}`, 'foo', 'ns'),
        ra(`selector:\n  matchLabels: {app: web}\njwtRules:\n- ${RULE}`, 'foo', 'sel'),
        ra(`selector:\n  matchLabels: {app: api}\njwtRules:\n- ${RULE}`, 'istio-system', 'root-sel'),
        ra(`selector:\n  matchLabels: {}\njwtRules:\n- ${RULE}`, 'bar', 'empty-sel'),
      ],
      DEFAULT_MESH,
    );
    expect(authns.map((a) => [a.name, a.scope, a.selector])).toEqual([
      ['mesh', 'GLOBAL', undefined],
      ['ns', 'NAMESPACE', undefined],
      ['sel', 'WORKLOAD_SELECTOR', { app: 'web' }],
      ['root-sel', 'GLOBAL', { app: 'api' }],
      ['empty-sel', 'NAMESPACE', undefined],
    ]);
    const names = (namespace: string, labels: Record<string, string>) => requestAuthnFor(authns, { namespace, labels }).map((a) => a.name);
    expect(names('foo', { app: 'web' })).toEqual(['mesh', 'ns', 'sel']);
    expect(names('foo', { app: 'other' })).toEqual(['mesh', 'ns']);
    expect(names('bar', { app: 'web' })).toEqual(['mesh', 'empty-sel']);
    expect(names('baz', { app: 'api' })).toEqual(['mesh', 'root-sel']);
  });

  const bad: [string, string, string, RegExp, string?][] = [
    ['no issuer', 'jwtRules:\n- jwks: "{}"', 'NM_ERR_CONFIG_INVALID', /^spec\.jwtRules\[0\]\.issuer is required/],
    ['jwksUri only', `jwtRules:\n- issuer: x\n  jwksUri: https://iss.example/jwks`, 'NM_ERR_POLICY', /^spec\.jwtRules\[0\]\.jwksUri: only inline jwks is supported, the proxy never fetches/],
    ['no jwks', 'jwtRules:\n- issuer: x', 'NM_ERR_CONFIG_INVALID', /^spec\.jwtRules\[0\]\.jwks is required/],
    ['jwks not JSON', 'jwtRules:\n- issuer: x\n  jwks: "{nope"', 'NM_ERR_CONFIG_INVALID', /^spec\.jwtRules\[0\]\.jwks is not JSON/],
    ['jwks without a keys list', 'jwtRules:\n- issuer: x\n  jwks: \'{"keys": {}}\'', 'NM_ERR_CONFIG_INVALID', /^spec\.jwtRules\[0\]\.jwks must be a JWKS/],
    ['fromHeaders without name', `jwtRules:\n- ${RULE}\n  fromHeaders:\n  - prefix: "Bearer "`, 'NM_ERR_CONFIG_INVALID', /^spec\.jwtRules\[0\]\.fromHeaders\[0\]\.name is required/],
    ['fromHeaders bad name', `jwtRules:\n- ${RULE}\n  fromHeaders:\n  - name: "bad header"`, 'NM_ERR_CONFIG_INVALID', /^spec\.jwtRules\[0\]\.fromHeaders\[0\]\.name: "bad header" is not an HTTP header name/],
    ['fromParams not strings', `jwtRules:\n- ${RULE}\n  fromParams: [1]`, 'NM_ERR_CONFIG_INVALID', /^spec\.jwtRules\[0\]\.fromParams\[0\] must be a string/],
    ['forwardOriginalToken not a bool', `jwtRules:\n- ${RULE}\n  forwardOriginalToken: "yes"`, 'NM_ERR_CONFIG_INVALID', /^spec\.jwtRules\[0\]\.forwardOriginalToken must be true or false/],
    ['audiences not a list', `jwtRules:\n- ${RULE}\n  audiences: a`, 'NM_ERR_CONFIG_INVALID', /^spec\.jwtRules\[0\]\.audiences must be a list/],
    ['outputPayloadToHeader', `jwtRules:\n- ${RULE}\n  outputPayloadToHeader: x-payload`, 'NM_ERR_POLICY', /^spec\.jwtRules\[0\]\.outputPayloadToHeader is not supported/],
    ['an unknown jwtRule field', `jwtRules:\n- ${RULE}\n  issuers: [x]`, 'NM_ERR_CONFIG_INVALID', /^spec\.jwtRules\[0\]\.issuers: unknown field/],
    ['a selector label not a string', `selector:\n  matchLabels: {app: 1}\njwtRules:\n- ${RULE}`, 'NM_ERR_CONFIG_INVALID', /^spec\.selector\.matchLabels\.app must be a string/],
    ['an unknown spec field', `jwtRule: []`, 'NM_ERR_CONFIG_INVALID', /^spec\.jwtRule: unknown field/],
    ['an unknown apiVersion', `jwtRules:\n- ${RULE}`, 'NM_ERR_CONFIG_INVALID', /^apiVersion security\.istio\.io\/v2 is not/, 'security.istio.io/v2'],
  ];

  it.each(bad)('refuses %s (%s)', (_label, spec, code, message, apiVersion) => {
    const good = ra(`jwtRules:\n- ${RULE}`, 'foo', 'good');
    const { authns, problems } = translateRequestAuthentications([ra(spec, 'foo', 'jwt', apiVersion), good], DEFAULT_MESH);
    expect(problems).toEqual([{ code, severity: 'error', file: 'ra.yaml', line: 1, message: expect.stringMatching(/^RequestAuthentication foo\/jwt: /), resource: 'RequestAuthentication foo/jwt' }]);
    expect(problems[0]!.message.replace('RequestAuthentication foo/jwt: ', '')).toMatch(message);
    // The invalid one is left out; the valid one beside it is served.
    expect(authns.map((a) => a.name)).toEqual(['good']);
  });

  it('warns and serves jwks when jwksUri is also set; a waypoint policy is not served', () => {
    const { authns, problems } = translateRequestAuthentications(
      [ra(`jwtRules:\n- ${RULE}\n  jwksUri: https://iss.example/jwks`), ra(`targetRefs:\n- kind: Gateway\n  name: gw\njwtRules:\n- ${RULE}`, 'foo', 'wp')],
      DEFAULT_MESH,
    );
    expect(problems.map((p) => [p.resource, p.severity, p.message.split(': ').slice(1).join(': ')])).toEqual([
      ['RequestAuthentication foo/jwt', 'warning', 'spec.jwtRules[0].jwksUri is ignored: spec.jwtRules[0].jwks is used'],
      ['RequestAuthentication foo/wp', 'warning', 'targetRef(s) attach the policy to a waypoint or gateway; node agents do not enforce it'],
    ]);
    expect(authns.map((a) => a.name)).toEqual(['jwt']);
  });
});
