// AuthorizationPolicy → Authorization translation and L4 evaluation, on the examples of Istio's
// AuthorizationPolicy documentation (https://istio.io/latest/docs/reference/config/security/authorization-policy/).
import { describe, expect, it } from 'vitest';
import { buildPolicySet } from '../../src/controlplane/authz.js';
import type { AuthorizationPolicy, PeerAuthentication } from '../../src/controlplane/resources.js';
import { DEFAULT_MESH } from '../../src/controlplane/translate.js';
import { parseConfigFile, type ConfigProblem } from '../../src/controlplane/validate.js';
import type { Pod } from '../../src/k8s/index.js';
import { evaluate } from '../../src/rbac/index.js';
import type { Authorization, Connection, Decision } from '../../src/state/index.js';
import { selectPolicies } from '../../src/state/policy.js';
import { authorizationFromProto, codecs } from '../../src/xds/index.js';

const POD_NS_FOO = `apiVersion: v1
kind: Pod
metadata:
  name: httpbin
  namespace: foo
  labels: {app: httpbin, version: v1}
spec:
  serviceAccountName: httpbin
  containers: [{name: main, command: [httpbin]}]
status: {podIP: 10.0.0.10}
---
apiVersion: v1
kind: Pod
metadata:
  name: other
  namespace: foo
  labels: {app: other}
spec:
  containers: [{name: main, command: [other]}]
status: {podIP: 10.0.0.11}
---
apiVersion: v1
kind: Pod
metadata:
  name: web
  namespace: bar
  labels: {app: web}
spec:
  containers: [{name: main, command: [web]}]
status: {podIP: 10.0.1.10}
`;

function ap(name: string, ns: string, spec: string, annotations = ''): string {
  return `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: ${name}
  namespace: ${ns}
${annotations ? `  annotations:\n${annotations}\n` : ''}spec:
${spec
  .split('\n')
  .map((l) => (l ? `  ${l}` : l))
  .join('\n')}
`;
}

interface World {
  decide(podName: string, conn: Omit<Connection, 'dstIp'> & { dstIp?: string }): Decision;
  problems: ConfigProblem[];
  policies: Authorization[];
  selected(podName: string): string[];
}

/** Everything between the YAML and the decision runs for real, through the xDS encoding. */
function world(...docs: string[]): World {
  const parsed = parseConfigFile([POD_NS_FOO, ...docs].join('---\n'), 'test.yaml');
  expect(parsed.problems.filter((p) => p.severity === 'error')).toEqual([]);
  const aps = parsed.objects.filter((o): o is AuthorizationPolicy => o.kind === 'AuthorizationPolicy');
  const pas = parsed.objects.filter((o): o is PeerAuthentication => o.kind === 'PeerAuthentication');
  const pods = parsed.objects.filter((o): o is Pod => o.kind === 'Pod');
  const set = buildPolicySet(aps, pas, DEFAULT_MESH);
  const policies = set.authorizations.map((a) => authorizationFromProto(codecs.authorization.decode(codecs.authorization.encode(a)), `${a.namespace}/${a.name}`));
  const podOf = (n: string) => pods.find((p) => p.metadata.name === n)!;
  return {
    problems: set.problems,
    policies,
    selected: (n) => set.policiesFor(podOf(n)),
    decide: (n, conn) => {
      const p = podOf(n);
      const applicable = selectPolicies(policies, { namespace: p.metadata.namespace, authorizationPolicies: set.policiesFor(p) });
      return evaluate(applicable, { dstIp: p.requestedIp!, ...conn });
    },
  };
}

const SLEEP = 'spiffe://cluster.local/ns/default/sa/sleep';
const FROM_FOO = 'spiffe://cluster.local/ns/foo/sa/client';
const FROM_BAR = 'spiffe://cluster.local/ns/bar/sa/client';
const conn = (srcPrincipal: string | undefined, dstPort = 8000, srcIp = '10.0.2.1'): Omit<Connection, 'dstIp'> => ({
  ...(srcPrincipal ? { srcPrincipal } : {}),
  srcIp,
  dstPort,
});

describe('AuthorizationPolicy at L4', () => {
  it('allows everything when no policy applies', () => {
    const w = world();
    expect(w.decide('httpbin', conn(undefined))).toMatchObject({ allowed: true, reason: 'no-allow-policy' });
  });

  it('allow-nothing: an ALLOW policy without rules denies every connection of its namespace only', () => {
    const w = world(ap('allow-nothing', 'foo', '{}'));
    expect(w.decide('httpbin', conn(SLEEP))).toMatchObject({ allowed: false, reason: 'no-allow-match' });
    expect(w.decide('other', conn(SLEEP)).allowed).toBe(false);
    expect(w.decide('web', conn(SLEEP)).allowed).toBe(true);
    expect(w.policies.find((p) => p.name === 'allow-nothing')).toMatchObject({ scope: 'NAMESPACE', action: 'ALLOW', rules: [] });
  });

  it('deny-all: a DENY policy with one empty rule denies everything', () => {
    const w = world(ap('deny-all', 'foo', 'action: DENY\nrules:\n- {}'));
    expect(w.decide('httpbin', conn(SLEEP))).toMatchObject({ allowed: false, policy: 'foo/deny-all', reason: 'denied-by-policy' });
  });

  it('allow-all: `rules: [{}]` allows everything, even next to allow-nothing', () => {
    const w = world(ap('allow-nothing', 'foo', '{}'), ap('allow-all', 'foo', 'rules:\n- {}'));
    expect(w.decide('httpbin', conn(undefined))).toMatchObject({ allowed: true, policy: 'foo/allow-all' });
  });

  it('evaluates DENY before ALLOW', () => {
    const w = world(ap('allow-all', 'foo', 'rules:\n- {}'), ap('deny-bar', 'foo', 'action: DENY\nrules:\n- from:\n  - source:\n      namespaces: ["bar"]'));
    expect(w.decide('httpbin', conn(FROM_BAR))).toMatchObject({ allowed: false, policy: 'foo/deny-bar' });
    expect(w.decide('httpbin', conn(FROM_FOO))).toMatchObject({ allowed: true, policy: 'foo/allow-all' });
  });

  it('allows when only DENY policies apply and none matches', () => {
    const w = world(ap('deny-bar', 'foo', 'action: DENY\nrules:\n- from:\n  - source:\n      namespaces: ["bar"]'));
    expect(w.decide('httpbin', conn(FROM_FOO))).toMatchObject({ allowed: true, reason: 'no-allow-policy' });
  });

  it('matches principals without the spiffe:// prefix, with exact, prefix, suffix and * forms', () => {
    const w = world(
      ap('sleep', 'foo', 'selector:\n  matchLabels: {app: httpbin}\nrules:\n- from:\n  - source:\n      principals: ["cluster.local/ns/default/sa/sleep"]'),
      ap('any-authn', 'foo', 'selector:\n  matchLabels: {app: other}\nrules:\n- from:\n  - source:\n      principals: ["*"]'),
      ap('prefix', 'bar', 'rules:\n- from:\n  - source:\n      principals: ["cluster.local/ns/foo/*", "*/sa/sleep"]'),
    );
    expect(w.decide('httpbin', conn(SLEEP)).allowed).toBe(true);
    expect(w.decide('httpbin', conn('spiffe://cluster.local/ns/default/sa/other')).allowed).toBe(false);
    expect(w.decide('other', conn(FROM_BAR)).allowed).toBe(true);
    expect(w.decide('other', conn(undefined))).toMatchObject({ allowed: false }); // plaintext has no principal
    expect(w.decide('web', conn(FROM_FOO)).allowed).toBe(true);
    expect(w.decide('web', conn(SLEEP)).allowed).toBe(true);
    expect(w.decide('web', conn(FROM_BAR)).allowed).toBe(false);
  });

  it('matches namespaces and notNamespaces from the peer identity', () => {
    const w = world(ap('from-foo', 'foo', 'rules:\n- from:\n  - source:\n      namespaces: ["foo"]'), ap('deny-not-foo', 'bar', 'action: DENY\nrules:\n- from:\n  - source:\n      notNamespaces: ["foo"]'));
    expect(w.decide('httpbin', conn(FROM_FOO)).allowed).toBe(true);
    expect(w.decide('httpbin', conn(FROM_BAR)).allowed).toBe(false);
    expect(w.decide('web', conn(FROM_FOO)).allowed).toBe(true);
    expect(w.decide('web', conn(FROM_BAR))).toMatchObject({ allowed: false, policy: 'bar/deny-not-foo' });
    expect(w.decide('web', conn(undefined)).allowed).toBe(false); // no identity: no namespace
  });

  it('matches ipBlocks and notIpBlocks as CIDRs, IPv4-mapped addresses included', () => {
    const w = world(ap('ips', 'foo', 'rules:\n- from:\n  - source:\n      ipBlocks: ["203.0.113.0/24", "10.9.9.9"]\n      notIpBlocks: ["203.0.113.128/25"]'));
    expect(w.decide('httpbin', conn(undefined, 80, '203.0.113.4')).allowed).toBe(true);
    expect(w.decide('httpbin', conn(undefined, 80, '::ffff:203.0.113.4')).allowed).toBe(true);
    expect(w.decide('httpbin', conn(undefined, 80, '203.0.113.200')).allowed).toBe(false);
    expect(w.decide('httpbin', conn(undefined, 80, '10.9.9.9')).allowed).toBe(true);
    expect(w.decide('httpbin', conn(undefined, 80, '10.9.9.8')).allowed).toBe(false);
  });

  it('matches to.operation ports and notPorts, ANDed with from', () => {
    const w = world(ap('ports', 'foo', 'rules:\n- from:\n  - source:\n      namespaces: ["foo"]\n  to:\n  - operation:\n      ports: ["8000", "9000"]\n- to:\n  - operation:\n      notPorts: ["8000", "9000", "22"]'));
    expect(w.decide('httpbin', conn(FROM_FOO, 8000)).allowed).toBe(true);
    expect(w.decide('httpbin', conn(FROM_BAR, 8000)).allowed).toBe(false);
    expect(w.decide('httpbin', conn(FROM_BAR, 7000)).allowed).toBe(true); // second rule
    expect(w.decide('httpbin', conn(FROM_FOO, 22)).allowed).toBe(false);
  });

  it('translates L4 when conditions, values and notValues', () => {
    const w = world(
      ap(
        'when',
        'foo',
        'rules:\n- when:\n  - key: source.ip\n    values: ["10.0.0.0/8"]\n    notValues: ["10.0.2.66"]\n  - key: destination.port\n    values: ["8000"]\n  - key: source.namespace\n    values: ["foo", "bar"]',
      ),
    );
    expect(w.decide('httpbin', conn(FROM_FOO, 8000, '10.0.2.1')).allowed).toBe(true);
    expect(w.decide('httpbin', conn(FROM_FOO, 8000, '10.0.2.66')).allowed).toBe(false);
    expect(w.decide('httpbin', conn(FROM_FOO, 9000, '10.0.2.1')).allowed).toBe(false);
    expect(w.decide('httpbin', conn(SLEEP, 8000, '10.0.2.1')).allowed).toBe(false);
  });

  it('scopes policies: root namespace → GLOBAL, namespace → NAMESPACE, selector → named workloads', () => {
    const w = world(
      ap('global-deny', 'istio-system', 'action: DENY\nrules:\n- to:\n  - operation:\n      ports: ["22"]'),
      ap('ns', 'foo', 'action: DENY\nrules:\n- to:\n  - operation:\n      ports: ["23"]'),
      ap('sel', 'foo', 'selector:\n  matchLabels: {app: httpbin}\naction: DENY\nrules:\n- to:\n  - operation:\n      ports: ["24"]'),
      ap('root-sel', 'istio-system', 'selector:\n  matchLabels: {app: web}\naction: DENY\nrules:\n- to:\n  - operation:\n      ports: ["25"]'),
    );
    const scope = (n: string) => w.policies.find((p) => p.name === n)!.scope;
    expect([scope('global-deny'), scope('ns'), scope('sel'), scope('root-sel')]).toEqual(['GLOBAL', 'NAMESPACE', 'WORKLOAD_SELECTOR', 'WORKLOAD_SELECTOR']);
    expect(w.selected('httpbin')).toEqual(['foo/sel']);
    expect(w.selected('web')).toEqual(['istio-system/root-sel']);
    expect(w.decide('web', conn(SLEEP, 22)).allowed).toBe(false);
    expect(w.decide('web', conn(SLEEP, 23)).allowed).toBe(true);
    expect(w.decide('other', conn(SLEEP, 23)).allowed).toBe(false);
    expect(w.decide('other', conn(SLEEP, 24)).allowed).toBe(true);
    expect(w.decide('httpbin', conn(SLEEP, 24)).allowed).toBe(false);
    expect(w.decide('web', conn(SLEEP, 25)).allowed).toBe(false);
    expect(w.decide('httpbin', conn(SLEEP, 25)).allowed).toBe(true);
  });

  it('drops an ALLOW rule with HTTP attributes (allowing less) and warns naming the policy', () => {
    const w = world(
      ap(
        'get-only',
        'foo',
        'rules:\n- from:\n  - source:\n      principals: ["cluster.local/ns/default/sa/sleep"]\n  to:\n  - operation:\n      methods: ["GET"]\n- from:\n  - source:\n      namespaces: ["foo"]',
      ),
    );
    // The GET rule can never be checked at L4: sleep is not allowed; the L4 rule still works.
    expect(w.decide('httpbin', conn(SLEEP)).allowed).toBe(false);
    expect(w.decide('httpbin', conn(FROM_FOO)).allowed).toBe(true);
    expect(w.problems).toEqual([
      expect.objectContaining({ code: 'NM_ERR_POLICY', severity: 'warning', resource: 'AuthorizationPolicy foo/get-only', line: 39, message: expect.stringMatching(/to\.operation\.methods.*ALLOW rule is left out/) }),
    ]);
  });

  it('keeps a DENY rule without its HTTP attributes (denying more) and warns', () => {
    const w = world(
      ap('deny-admin', 'foo', 'action: DENY\nrules:\n- from:\n  - source:\n      namespaces: ["bar"]\n  to:\n  - operation:\n      paths: ["/admin"]'),
      ap('deny-header', 'bar', 'action: DENY\nrules:\n- when:\n  - key: request.headers[x-evil]\n    values: ["1"]'),
    );
    expect(w.decide('httpbin', conn(FROM_BAR)).allowed).toBe(false); // any path, at L4
    expect(w.decide('httpbin', conn(FROM_FOO)).allowed).toBe(true);
    expect(w.decide('web', conn(FROM_FOO)).allowed).toBe(false); // header-only DENY denies all
    expect(w.problems.map((p) => p.resource)).toEqual(['AuthorizationPolicy foo/deny-admin', 'AuthorizationPolicy bar/deny-header']);
    expect(w.problems[0]!.message).toMatch(/to\.operation\.paths.*denies more broadly/);
  });

  it('reports dry-run policies without enforcing them', () => {
    const w = world(ap('dry-deny', 'foo', 'action: DENY\nrules:\n- {}', '    istio.io/dry-run: "true"'));
    expect(w.decide('httpbin', conn(SLEEP))).toEqual({ allowed: true, reason: 'no-allow-policy', dryRun: [{ policy: 'foo/dry-deny', action: 'DENY' }] });
  });

  it('reports AUDIT and CUSTOM as untranslatable and waypoint policies as not enforced', () => {
    const parsed = parseConfigFile(
      [ap('audit', 'foo', 'action: AUDIT\nrules:\n- {}'), ap('custom', 'foo', 'action: CUSTOM\nprovider:\n  name: ext\nrules:\n- {}'), ap('wp', 'foo', 'targetRefs:\n- kind: Service\n  name: web\nrules:\n- {}')].join('---\n'),
      'p.yaml',
    );
    expect(parsed.problems.map((p) => [p.resource, p.code, p.line])).toEqual([
      ['AuthorizationPolicy foo/audit', 'NM_ERR_POLICY', 7],
      ['AuthorizationPolicy foo/custom', 'NM_ERR_POLICY', 17],
    ]);
    const set = buildPolicySet(parsed.objects as AuthorizationPolicy[], [], DEFAULT_MESH);
    expect(set.problems.map((p) => [p.resource, p.severity, p.line])).toEqual([['AuthorizationPolicy foo/wp', 'warning', 23]]);
    expect(set.authorizations.map((a) => a.name)).toEqual(['istio_converted_static_strict']);
  });
});

function pa(name: string, ns: string, spec: string): string {
  return `apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata:
  name: ${name}
  namespace: ${ns}
spec:
${spec
  .split('\n')
  .map((l) => `  ${l}`)
  .join('\n')}
`;
}

describe('PeerAuthentication at L4', () => {
  it('mesh-wide STRICT denies plaintext through istio_converted_static_strict', () => {
    const w = world(pa('default', 'istio-system', 'mtls:\n  mode: STRICT'));
    expect(w.selected('httpbin')).toEqual(['istio-system/istio_converted_static_strict']);
    expect(w.decide('httpbin', conn(undefined))).toMatchObject({ allowed: false, policy: 'istio-system/istio_converted_static_strict' });
    expect(w.decide('httpbin', conn(SLEEP)).allowed).toBe(true);
  });

  it('a namespace PERMISSIVE policy overrides mesh STRICT; a workload STRICT policy overrides that', () => {
    const w = world(
      pa('default', 'istio-system', 'mtls:\n  mode: STRICT'),
      pa('default', 'foo', 'mtls:\n  mode: PERMISSIVE'),
      pa('httpbin', 'foo', 'selector:\n  matchLabels: {app: httpbin}\nmtls:\n  mode: STRICT'),
    );
    expect(w.decide('other', conn(undefined)).allowed).toBe(true);
    expect(w.decide('httpbin', conn(undefined)).allowed).toBe(false);
    expect(w.decide('web', conn(undefined)).allowed).toBe(false);
  });

  it('port-level exceptions become a converted DENY policy for the selected workload', () => {
    const w = world(
      pa('default', 'istio-system', 'mtls:\n  mode: STRICT'),
      pa('httpbin', 'foo', 'selector:\n  matchLabels: {app: httpbin}\nportLevelMtls:\n  "8080":\n    mode: PERMISSIVE'),
    );
    expect(w.selected('httpbin')).toEqual(['foo/converted_peer_authentication_httpbin']);
    expect(w.decide('httpbin', conn(undefined, 8080)).allowed).toBe(true);
    expect(w.decide('httpbin', conn(undefined, 9090))).toMatchObject({ allowed: false, policy: 'foo/converted_peer_authentication_httpbin' });
    expect(w.decide('httpbin', conn(SLEEP, 9090)).allowed).toBe(true);
    expect(w.decide('other', conn(undefined, 8080)).allowed).toBe(false);
  });
});

describe('evaluate', () => {
  const m = (over: Partial<import('../../src/state/index.js').Match>): import('../../src/state/index.js').Match => ({
    namespaces: [], notNamespaces: [], principals: [], notPrincipals: [], serviceAccounts: [], notServiceAccounts: [],
    sourceIps: [], notSourceIps: [], destinationIps: [], notDestinationIps: [], destinationPorts: [], notDestinationPorts: [],
    ...over,
  });
  const allow = (clauses: { matches: ReturnType<typeof m>[] }[]): Authorization => ({ name: 'p', namespace: 'ns', scope: 'NAMESPACE', action: 'ALLOW', dryRun: false, rules: [{ clauses }] });
  const c: Connection = { srcPrincipal: 'spiffe://td/ns/a/sa/b', srcIp: '10.0.0.1', dstIp: '10.0.0.2', dstPort: 80 };

  it('ORs rules, ANDs clauses, ORs matches', () => {
    const yes = m({ destinationPorts: [80] });
    const no = m({ destinationPorts: [81] });
    expect(evaluate([allow([{ matches: [no, yes] }])], c).allowed).toBe(true);
    expect(evaluate([allow([{ matches: [yes] }, { matches: [no] }])], c).allowed).toBe(false);
    expect(evaluate([{ ...allow([]), rules: [{ clauses: [{ matches: [no] }] }, { clauses: [{ matches: [yes] }] }] }], c).allowed).toBe(true);
  });

  it('treats an empty clause as matching and an empty match as not matching (as ztunnel does)', () => {
    expect(evaluate([allow([{ matches: [] }])], c).allowed).toBe(true);
    expect(evaluate([allow([{ matches: [m({})] }])], c).allowed).toBe(false);
  });

  it('matches string forms, service accounts, destination IPs and negations', () => {
    const ok = (x: ReturnType<typeof m>) => evaluate([allow([{ matches: [x] }])], c).allowed;
    expect(ok(m({ principals: [{ suffix: '/sa/b' }] }))).toBe(true);
    expect(ok(m({ principals: [{ prefix: 'td/ns/a/' }] }))).toBe(true);
    expect(ok(m({ principals: [{ exact: 'spiffe://td/ns/a/sa/b' }] }))).toBe(false); // compared without spiffe://
    expect(ok(m({ notPrincipals: [{ presence: true }] }))).toBe(false);
    expect(ok(m({ serviceAccounts: [{ namespace: 'a', serviceAccount: 'b' }] }))).toBe(true);
    expect(ok(m({ notServiceAccounts: [{ namespace: 'a', serviceAccount: 'b' }] }))).toBe(false);
    expect(ok(m({ namespaces: [{ exact: 'a' }], notDestinationPorts: [80] }))).toBe(false);
    expect(ok(m({ destinationIps: [{ bytes: Buffer.from([10, 0, 0, 0]), prefixLen: 30 }] }))).toBe(true);
    expect(ok(m({ notDestinationIps: [{ bytes: Buffer.from([10, 0, 0, 2]), prefixLen: 32 }] }))).toBe(false);
  });
});
