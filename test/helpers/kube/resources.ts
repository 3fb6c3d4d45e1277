// The kinds the Kubernetes stand-in serves (test/helpers/kube-apiserver.ts) and the discovery
// documents (/api, /apis, APIResourceList) built from them, shaped as kube-apiserver 1.31 answers.
import type { KubeObject } from './errors.js';

/** One served resource, as discovery describes it. A CRD-backed kind lists every served version. */
export interface ResourceKind {
  /** '' for the core group (paths under /api/v1). */
  group: string;
  /** Served versions; the first is the preferred one. Objects are stored once, without conversion. */
  versions: string[];
  kind: string;
  plural: string;
  singular: string;
  namespaced: boolean;
  /** Subresources served: 'status' for all of these, 'token' on serviceaccounts, 'binding' on pods. */
  subresources: string[];
  /** Verbs on the main resource; TokenReview is create-only. */
  verbs: string[];
  shortNames?: string[];
  /** Field selector labels beyond metadata.name and metadata.namespace (the real server's per-kind set). */
  fields?: Record<string, (o: KubeObject) => string | undefined>;
  /** True when a CustomResourceDefinition object stands behind it (created at start, deletable). */
  crd?: boolean;
}

const ALL = ['create', 'delete', 'deletecollection', 'get', 'list', 'patch', 'update', 'watch'];
const at = (o: KubeObject, ...path: string[]): string | undefined => {
  let v: unknown = o;
  for (const p of path) v = v && typeof v === 'object' ? (v as Record<string, unknown>)[p] : undefined;
  return v === undefined || v === null ? undefined : String(v);
};

function crd(group: string, versions: string[], kind: string, plural: string, shortNames?: string[]): ResourceKind {
  return { group, versions, kind, plural, singular: kind.toLowerCase(), namespaced: true, subresources: ['status'], verbs: ALL, shortNames, crd: true };
}

/** Everything the stand-in can serve; `startKubeStandIn({ resources })` takes a subset of this. */
export const KUBE_RESOURCES: readonly ResourceKind[] = [
  {
    group: '', versions: ['v1'], kind: 'Namespace', plural: 'namespaces', singular: 'namespace', namespaced: false,
    subresources: ['status'], verbs: ['create', 'delete', 'get', 'list', 'patch', 'update', 'watch'], shortNames: ['ns'],
    fields: { 'status.phase': (o) => at(o, 'status', 'phase') },
  },
  {
    group: '', versions: ['v1'], kind: 'Pod', plural: 'pods', singular: 'pod', namespaced: true,
    subresources: ['status', 'binding'], verbs: ALL, shortNames: ['po'],
    fields: {
      'spec.nodeName': (o) => at(o, 'spec', 'nodeName') ?? '',
      'spec.restartPolicy': (o) => at(o, 'spec', 'restartPolicy') ?? '',
      'spec.schedulerName': (o) => at(o, 'spec', 'schedulerName') ?? '',
      'spec.serviceAccountName': (o) => at(o, 'spec', 'serviceAccountName') ?? '',
      'spec.hostNetwork': (o) => at(o, 'spec', 'hostNetwork') ?? 'false',
      'status.phase': (o) => at(o, 'status', 'phase') ?? '',
      'status.podIP': (o) => at(o, 'status', 'podIP') ?? '',
      'status.nominatedNodeName': (o) => at(o, 'status', 'nominatedNodeName') ?? '',
    },
  },
  { group: '', versions: ['v1'], kind: 'Service', plural: 'services', singular: 'service', namespaced: true, subresources: ['status'], verbs: ALL, shortNames: ['svc'] },
  { group: '', versions: ['v1'], kind: 'ServiceAccount', plural: 'serviceaccounts', singular: 'serviceaccount', namespaced: true, subresources: ['token'], verbs: ALL, shortNames: ['sa'] },
  {
    group: '', versions: ['v1'], kind: 'Node', plural: 'nodes', singular: 'node', namespaced: false, subresources: ['status'], verbs: ALL, shortNames: ['no'],
    fields: { 'spec.unschedulable': (o) => at(o, 'spec', 'unschedulable') ?? 'false' },
  },
  { group: 'discovery.k8s.io', versions: ['v1'], kind: 'EndpointSlice', plural: 'endpointslices', singular: 'endpointslice', namespaced: true, subresources: [], verbs: ALL },
  { group: 'authentication.k8s.io', versions: ['v1'], kind: 'TokenReview', plural: 'tokenreviews', singular: 'tokenreview', namespaced: false, subresources: [], verbs: ['create'] },
  {
    group: 'apiextensions.k8s.io', versions: ['v1'], kind: 'CustomResourceDefinition', plural: 'customresourcedefinitions', singular: 'customresourcedefinition',
    namespaced: false, subresources: ['status'], verbs: ALL, shortNames: ['crd', 'crds'],
  },
  crd('security.istio.io', ['v1', 'v1beta1'], 'AuthorizationPolicy', 'authorizationpolicies', ['ap']),
  crd('security.istio.io', ['v1', 'v1beta1'], 'PeerAuthentication', 'peerauthentications', ['pa']),
  crd('security.istio.io', ['v1', 'v1beta1'], 'RequestAuthentication', 'requestauthentications', ['ra']),
  crd('networking.istio.io', ['v1', 'v1beta1', 'v1alpha3'], 'VirtualService', 'virtualservices', ['vs']),
  crd('networking.istio.io', ['v1', 'v1beta1', 'v1alpha3'], 'DestinationRule', 'destinationrules', ['dr']),
  crd('gateway.networking.k8s.io', ['v1', 'v1beta1'], 'HTTPRoute', 'httproutes'),
];

export const groupOf = (apiVersion: string): { group: string; version: string } => {
  const i = apiVersion.indexOf('/');
  return i < 0 ? { group: '', version: apiVersion } : { group: apiVersion.slice(0, i), version: apiVersion.slice(i + 1) };
};
export const apiVersionOf = (group: string, version: string): string => (group ? `${group}/${version}` : version);
/** The store key of a kind: objects of every version of one resource share it. */
export const resourceKey = (r: ResourceKind): string => `${r.group}/${r.plural}`;

/** The CustomResourceDefinition object behind a CRD-backed kind (what `kubectl get crd` shows). */
export function crdObjectFor(r: ResourceKind): KubeObject {
  return {
    apiVersion: 'apiextensions.k8s.io/v1',
    kind: 'CustomResourceDefinition',
    metadata: { name: `${r.plural}.${r.group}` },
    spec: {
      group: r.group,
      names: { plural: r.plural, singular: r.singular, kind: r.kind, listKind: `${r.kind}List`, ...(r.shortNames ? { shortNames: r.shortNames } : {}) },
      scope: r.namespaced ? 'Namespaced' : 'Cluster',
      versions: r.versions.map((name, i) => ({
        name, served: true, storage: i === 0,
        schema: { openAPIV3Schema: { type: 'object', 'x-kubernetes-preserve-unknown-fields': true } },
        ...(r.subresources.includes('status') ? { subresources: { status: {} } } : {}),
      })),
    },
  };
}

/** The kind a CustomResourceDefinition object asks to serve (the apiextensions controller's job). */
export function kindFromCrd(o: KubeObject): ResourceKind {
  const spec = (o.spec ?? {}) as {
    group?: string; scope?: string;
    names?: { plural?: string; singular?: string; kind?: string; shortNames?: string[] };
    versions?: { name: string; served?: boolean; storage?: boolean; subresources?: { status?: unknown } }[];
  };
  const versions = (spec.versions ?? []).filter((v) => v.served !== false);
  versions.sort((a, b) => Number(b.storage === true) - Number(a.storage === true));
  const kind = spec.names?.kind ?? '';
  return {
    group: spec.group ?? '', versions: versions.map((v) => v.name), kind, plural: spec.names?.plural ?? '',
    singular: spec.names?.singular ?? kind.toLowerCase(), namespaced: spec.scope !== 'Cluster',
    subresources: versions.some((v) => v.subresources?.status !== undefined) ? ['status'] : [], verbs: ALL,
    shortNames: spec.names?.shortNames, crd: true,
  };
}

function apiResources(r: ResourceKind): Record<string, unknown>[] {
  const out: Record<string, unknown>[] = [
    { name: r.plural, singularName: r.singular, namespaced: r.namespaced, kind: r.kind, verbs: r.verbs, ...(r.shortNames ? { shortNames: r.shortNames } : {}) },
  ];
  for (const s of r.subresources) {
    if (s === 'status') out.push({ name: `${r.plural}/status`, singularName: '', namespaced: r.namespaced, kind: r.kind, verbs: ['get', 'patch', 'update'] });
    if (s === 'binding') out.push({ name: `${r.plural}/binding`, singularName: '', namespaced: r.namespaced, kind: 'Binding', verbs: ['create'] });
    if (s === 'token') {
      out.push({ name: `${r.plural}/token`, singularName: '', namespaced: r.namespaced, group: 'authentication.k8s.io', version: 'v1', kind: 'TokenRequest', verbs: ['create'] });
    }
  }
  return out;
}

/** GET /api/v1 or /apis/<group>/<version>. */
export function apiResourceList(kinds: readonly ResourceKind[], group: string, version: string): Record<string, unknown> {
  return {
    kind: 'APIResourceList', apiVersion: 'v1', groupVersion: apiVersionOf(group, version),
    resources: kinds.filter((r) => r.group === group && r.versions.includes(version)).flatMap(apiResources),
  };
}

function groupVersions(kinds: readonly ResourceKind[], group: string): string[] {
  const vs: string[] = [];
  for (const r of kinds) if (r.group === group) for (const v of r.versions) if (!vs.includes(v)) vs.push(v);
  return vs;
}

/** GET /apis/<group>. */
export function apiGroup(kinds: readonly ResourceKind[], group: string): Record<string, unknown> | undefined {
  const vs = groupVersions(kinds, group);
  if (!vs.length) return undefined;
  const versions = vs.map((v) => ({ groupVersion: `${group}/${v}`, version: v }));
  return { kind: 'APIGroup', apiVersion: 'v1', name: group, versions, preferredVersion: versions[0] };
}

/** GET /apis. */
export function apiGroupList(kinds: readonly ResourceKind[]): Record<string, unknown> {
  const groups = [...new Set(kinds.map((r) => r.group).filter((g) => g !== ''))];
  return { kind: 'APIGroupList', apiVersion: 'v1', groups: groups.map((g) => { const { kind: _k, apiVersion: _a, ...rest } = apiGroup(kinds, g)!; return rest; }) };
}

/** GET /api. */
export function apiVersions(address: string): Record<string, unknown> {
  return { kind: 'APIVersions', versions: ['v1'], serverAddressByClientCIDRs: [{ clientCIDR: '0.0.0.0/0', serverAddress: address }] };
}

/** GET /version. */
export const VERSION_INFO = {
  major: '1', minor: '31', gitVersion: 'v1.31.0-nodemesh-standin', gitCommit: '0000000000000000000000000000000000000000',
  gitTreeState: 'clean', buildDate: '2024-08-13T00:00:00Z', goVersion: 'go1.22.5', compiler: 'gc', platform: 'linux/amd64',
};
