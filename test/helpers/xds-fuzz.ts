// The xDS fuzz targets' material: valid Address and Authorization messages (the seeds the
// mutations start from), arbitraries of resources and responses mixing valid, mutated and
// random ones, and the oracle every accepted resource must satisfy, whoever decoded it.
import fc from 'fast-check';
import { isIp } from '../../src/net/index.js';
import { ACTIONS, APP_PROTOCOLS, SCOPES, TUNNEL_PROTOCOLS, WORKLOAD_STATUSES, WORKLOAD_TYPES, type ProxyState, type ServicePort } from '../../src/state/index.js';
import { codecs, TYPE_ADDRESS, TYPE_AUTHORIZATION, type PbAuthorization, type PbService, type PbWorkload } from '../../src/xds/index.js';
import { mutatedBytes, mutatedValue } from './mutate.js';

const ip = (...b: number[]) => Buffer.from(b);

export const W_WEB: PbWorkload = {
  uid: 'Kubernetes//Pod/foo/web',
  name: 'web',
  namespace: 'foo',
  addresses: [ip(10, 1, 0, 5)],
  network: '',
  tunnelProtocol: 'HBONE',
  trustDomain: 'cluster.local',
  serviceAccount: 'web',
  node: 'node-a',
  canonicalName: 'web',
  canonicalRevision: 'v1',
  workloadType: 'POD',
  workloadName: 'web',
  authorizationPolicies: ['foo/deny-bar'],
  status: 'HEALTHY',
  clusterId: 'Kubernetes',
  services: { 'foo/web.foo.svc.cluster.local': { ports: [{ servicePort: 80, targetPort: 8080, appProtocol: 'HTTP11' }] } },
};

export const W_DB: PbWorkload = {
  ...W_WEB,
  uid: 'Kubernetes//Pod/bar/db',
  name: 'db',
  namespace: 'bar',
  addresses: [ip(10, 1, 0, 6), ip(0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 6)],
  tunnelProtocol: 'NONE',
  serviceAccount: 'db',
  canonicalName: 'db',
  workloadName: 'db',
  authorizationPolicies: [],
  services: {},
};

export const S_WEB: PbService = {
  name: 'web',
  namespace: 'foo',
  hostname: 'web.foo.svc.cluster.local',
  addresses: [{ network: '', address: ip(10, 96, 0, 10) }],
  ports: [
    { servicePort: 80, targetPort: 8080, appProtocol: 'HTTP11' },
    { servicePort: 9000, targetPort: 0, appProtocol: 'TCP' },
  ],
  subjectAltNames: ['spiffe://cluster.local/ns/foo/sa/web'],
};

export const P_DENY: PbAuthorization = {
  name: 'deny-bar',
  namespace: 'foo',
  scope: 'WORKLOAD_SELECTOR',
  action: 'DENY',
  dryRun: false,
  rules: [
    {
      clauses: [
        { matches: [{ namespaces: [{ exact: 'bar' }], sourceIps: [{ address: ip(10, 2, 0, 0), length: 16 }], destinationPorts: [8080] }] },
        { matches: [{ principals: [{ prefix: 'cluster.local/ns/bar/' }], notServiceAccounts: [{ namespace: 'bar', serviceAccount: 'ok' }] }] },
      ],
    },
  ],
};

export const P_ALLOW: PbAuthorization = {
  name: 'allow-all',
  namespace: 'istio-system',
  scope: 'GLOBAL',
  action: 'ALLOW',
  dryRun: true,
  rules: [{ clauses: [{ matches: [{ notDestinationIps: [{ address: ip(0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0), length: 8 }], notDestinationPorts: [15008] }] }] }],
};

export interface Seed {
  typeUrl: string;
  name: string;
  /** The message as codecs encode it. */
  message: Record<string, unknown>;
  bytes: Uint8Array;
}

const addr = (name: string, message: Record<string, unknown>): Seed => ({ typeUrl: TYPE_ADDRESS, name, message, bytes: codecs.address.encode(message as never) });
const authz = (p: PbAuthorization): Seed => ({ typeUrl: TYPE_AUTHORIZATION, name: `${p.namespace}/${p.name}`, message: p as unknown as Record<string, unknown>, bytes: codecs.authorization.encode(p) });

/** The last good state every case starts from (or must keep). */
export const BASELINE: readonly Seed[] = [
  addr(W_WEB.uid, { workload: W_WEB }),
  addr(W_DB.uid, { workload: W_DB }),
  addr(`${S_WEB.namespace}/${S_WEB.hostname}`, { service: S_WEB }),
  authz(P_DENY),
  authz(P_ALLOW),
];

/** Valid resources under names the baseline does not use (an accepted one adds state). */
export const FRESH: readonly Seed[] = [
  addr('Kubernetes//Pod/foo/new', { workload: { ...W_WEB, uid: 'Kubernetes//Pod/foo/new', name: 'new', addresses: [ip(10, 1, 0, 5)] } }),
  addr('foo/new.foo.svc.cluster.local', { service: { ...S_WEB, hostname: 'new.foo.svc.cluster.local', addresses: [{ network: '', address: ip(10, 96, 0, 10) }] } }),
  authz({ ...P_DENY, name: 'new' }),
];

const SEEDS = [...BASELINE, ...FRESH];
const SEED_BYTES = SEEDS.map((s) => s.bytes);
const NAMES = SEEDS.map((s) => s.name);

/** One resource of a response: name, version and an Any. */
export interface FuzzResource {
  name: string;
  version: string;
  typeUrl: string;
  value: Uint8Array;
}

function tryEncode(typeUrl: string, message: unknown): Uint8Array | undefined {
  try {
    return typeUrl === TYPE_ADDRESS ? codecs.address.encode(message as never) : codecs.authorization.encode(message as never);
  } catch {
    return undefined; // protobufjs refused the shape: the byte mutations cover such inputs
  }
}

const nameArb = fc.oneof(
  { weight: 6, arbitrary: fc.constantFrom(...NAMES) },
  { weight: 1, arbitrary: fc.constantFrom('', 'foo/', '/', 'Kubernetes//Pod/foo/web ', 'FOO/deny-bar') },
  { weight: 1, arbitrary: fc.string({ maxLength: 24 }) },
);

const typeUrlArb = (right: string) =>
  fc.oneof({ weight: 12, arbitrary: fc.constant(right) }, fc.constantFrom(TYPE_ADDRESS, TYPE_AUTHORIZATION, 'type.googleapis.com/istio.workload.Workload', ''), fc.string({ maxLength: 12 }));

/**
 * Resources: a seed kept whole (so some are accepted), a seed structurally mutated and
 * re-encoded, a seed's bytes mutated, or noise; under the seed's name or another.
 */
export const resourceArb: fc.Arbitrary<FuzzResource> = fc.nat(SEEDS.length - 1).chain((i) => {
  const seed = SEEDS[i]!;
  const bytes = mutatedBytes([seed.bytes], 4, SEED_BYTES);
  const value = fc.oneof(
    { weight: 2, arbitrary: fc.constant(seed.bytes) },
    { weight: 4, arbitrary: fc.tuple(mutatedValue([seed.message]), bytes).map(([m, fallback]) => tryEncode(seed.typeUrl, m) ?? fallback) },
    { weight: 4, arbitrary: bytes },
    { weight: 1, arbitrary: fc.uint8Array({ maxLength: 64 }) },
  );
  return fc.record({
    name: fc.oneof({ weight: 3, arbitrary: fc.constant(seed.name) }, nameArb),
    version: fc.string({ maxLength: 8 }),
    typeUrl: typeUrlArb(seed.typeUrl),
    value,
  });
});

export interface FuzzResponse {
  /** The response's type: which handler gets it. */
  typeUrl: string;
  resources: FuzzResource[];
  /** Never a baseline name: removing one is a valid instruction, not a bad input. */
  removed: string[];
}

export const responseArb: fc.Arbitrary<FuzzResponse> = fc.record({
  typeUrl: fc.oneof({ weight: 10, arbitrary: fc.constantFrom(TYPE_ADDRESS, TYPE_AUTHORIZATION) }, fc.constantFrom('type.googleapis.com/envoy.config.cluster.v3.Cluster', '')),
  resources: fc.uniqueArray(resourceArb, { minLength: 1, maxLength: 4, selector: (r) => r.name }),
  removed: fc.array(fc.oneof(fc.constantFrom(...FRESH.map((s) => s.name)), fc.string({ maxLength: 12 })), { maxLength: 2 }).map((l) => l.filter((n) => !BASELINE.some((b) => b.name === n))),
});

// ---- the oracle -------------------------------------------------------------------------------

const inSet = (list: readonly string[], v: string) => list.includes(v);

function portOk(p: ServicePort): boolean {
  return Number.isInteger(p.servicePort) && p.servicePort >= 1 && p.servicePort <= 65535 && Number.isInteger(p.targetPort) && p.targetPort >= 0 && p.targetPort <= 65535 && inSet(APP_PROTOCOLS, p.appProtocol);
}

/**
 * What must hold of every resource the store holds, under the name it was sent with: whatever
 * the bytes were, nothing invalid gets in. Returns the violations (empty when all is well).
 */
export function violations(state: ProxyState): string[] {
  const out: string[] = [];
  for (const w of state.workloads()) {
    const why: string[] = [];
    if (state.workloadByUid(w.uid) !== w) why.push('not stored under its uid');
    if (!w.name || !w.namespace) why.push('name or namespace empty');
    if (!w.addresses.every(isIp)) why.push(`address not an IP: ${JSON.stringify(w.addresses)}`);
    if (!inSet(TUNNEL_PROTOCOLS, w.tunnelProtocol) || !inSet(WORKLOAD_STATUSES, w.status) || !inSet(WORKLOAD_TYPES, w.workloadType)) why.push('enum out of range');
    if (w.identity !== `spiffe://${w.trustDomain}/ns/${w.namespace}/sa/${w.serviceAccount}`) why.push(`identity ${w.identity}`);
    for (const [k, ports] of Object.entries(w.services)) if (!/^[^/]+\/[^/]+$/.test(k) || !ports.every(portOk)) why.push(`service ${k}`);
    for (const a of w.addresses) if (!state.workloadByIp(a)?.addresses.includes(a)) why.push(`workloadByIp(${a}) does not hold ${a}`);
    if (why.length) out.push(`workload ${w.uid}: ${why.join('; ')}`);
  }
  for (const s of state.services()) {
    const why: string[] = [];
    if (state.serviceByHostname(s.key) !== s || s.key !== `${s.namespace}/${s.hostname}`) why.push('not stored under ns/hostname');
    if (!s.vips.every((v) => isIp(v.address))) why.push('VIP not an IP');
    if (!s.ports.every(portOk)) why.push('port out of range');
    for (const v of s.vips) if (!state.serviceByVip(v.address)?.vips.some((x) => x.address === v.address)) why.push(`serviceByVip(${v.address})`);
    if (why.length) out.push(`service ${s.key}: ${why.join('; ')}`);
  }
  for (const p of state.policies()) {
    const why: string[] = [];
    if (state.policy(`${p.namespace}/${p.name}`) !== p || !p.name || !p.namespace) why.push('not stored under ns/name');
    if (!inSet(SCOPES, p.scope) || !inSet(ACTIONS, p.action)) why.push('enum out of range');
    for (const r of p.rules)
      for (const c of r.clauses)
        for (const m of c.matches) {
          for (const x of [...m.sourceIps, ...m.notSourceIps, ...m.destinationIps, ...m.notDestinationIps]) {
            if ((x.bytes.length !== 4 && x.bytes.length !== 16) || x.prefixLen < 0 || x.prefixLen > x.bytes.length * 8) why.push('CIDR');
          }
          for (const port of [...m.destinationPorts, ...m.notDestinationPorts]) if (!Number.isInteger(port) || port < 0 || port > 65535) why.push(`port ${port}`);
          for (const sm of [...m.namespaces, ...m.notNamespaces, ...m.principals, ...m.notPrincipals]) if (Object.keys(sm).length !== 1) why.push('StringMatch');
        }
    if (why.length) out.push(`policy ${p.namespace}/${p.name}: ${why.join('; ')}`);
  }
  return out;
}

/** What the store holds under a resource name (workload, service or policy), for comparisons. */
export function held(state: ProxyState, name: string): unknown {
  return state.workloadByUid(name) ?? state.serviceByHostname(name) ?? state.policy(name);
}
