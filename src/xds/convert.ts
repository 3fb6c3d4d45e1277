// Validates decoded xDS messages and turns them into the data plane's types. Each function
// throws XdsError (NM_ERR_XDS_RESOURCE) with a reason an operator can act on; the caller NACKs the resource.
import { XdsError } from '../errors.js';
import { bytesToIp } from '../net/index.js';
import {
  ACTIONS,
  APP_PROTOCOLS,
  SCOPES,
  TUNNEL_PROTOCOLS,
  WORKLOAD_STATUSES,
  WORKLOAD_TYPES,
  type AddressResource,
  type AppProtocol,
  type Authorization,
  type Service,
  type ServicePort,
  type Workload,
} from '../state/index.js';
import { rulesFromProto, rulesToProto } from './convert-authz.js';
import { enumValue, labelsFromProto } from './convert-common.js';
import type { PbAddress, PbAuthorization, PbPort, PbService, PbWorkload } from './proto.js';

const TUNNEL: ReadonlySet<string> = new Set(TUNNEL_PROTOCOLS);
const STATUS: ReadonlySet<string> = new Set(WORKLOAD_STATUSES);
const WTYPE: ReadonlySet<string> = new Set(WORKLOAD_TYPES);
const APP: ReadonlySet<string> = new Set(APP_PROTOCOLS);
const SCOPE: ReadonlySet<string> = new Set(SCOPES);
const ACTION: ReadonlySet<string> = new Set(ACTIONS);

function ip(b: Uint8Array, field: string): string {
  try {
    return bytesToIp(b);
  } catch (e) {
    throw new XdsError('NM_ERR_XDS_RESOURCE', `${field}: ${(e as Error).message}`);
  }
}

function port(p: PbPort, field: string): ServicePort {
  if (!Number.isInteger(p.servicePort) || p.servicePort < 1 || p.servicePort > 65535) throw new XdsError('NM_ERR_XDS_RESOURCE', `${field}.service_port ${p.servicePort} is not a port 1-65535`);
  if (!Number.isInteger(p.targetPort) || p.targetPort < 0 || p.targetPort > 65535) throw new XdsError('NM_ERR_XDS_RESOURCE', `${field}.target_port ${p.targetPort} is not a port 0-65535`);
  return { servicePort: p.servicePort, targetPort: p.targetPort, appProtocol: enumValue<AppProtocol>(APP, p.appProtocol ?? 'UNKNOWN', `${field}.app_protocol`) };
}

export function workloadFromProto(w: PbWorkload, resourceName: string): Workload {
  if (!w.uid) throw new XdsError('NM_ERR_XDS_RESOURCE', 'workload uid is empty');
  if (w.uid !== resourceName) throw new XdsError('NM_ERR_XDS_RESOURCE', `workload uid ${JSON.stringify(w.uid)} differs from the resource name`);
  if (!w.name || !w.namespace) throw new XdsError('NM_ERR_XDS_RESOURCE', 'workload name and namespace are required');
  const trustDomain = w.trustDomain || 'cluster.local';
  const serviceAccount = w.serviceAccount || 'default';
  const services: Record<string, ServicePort[]> = {};
  for (const [k, list] of Object.entries(w.services ?? {})) {
    if (!/^[^/]+\/[^/]+$/.test(k)) throw new XdsError('NM_ERR_XDS_RESOURCE', `services key ${JSON.stringify(k)} is not "<namespace>/<hostname>"`);
    services[k] = (list.ports ?? []).map((p, i) => port(p, `services[${k}].ports[${i}]`));
  }
  return {
    uid: w.uid,
    name: w.name,
    namespace: w.namespace,
    addresses: (w.addresses ?? []).map((a, i) => ip(a, `addresses[${i}]`)),
    network: w.network ?? '',
    tunnelProtocol: enumValue(TUNNEL, w.tunnelProtocol, 'tunnel_protocol'),
    trustDomain,
    serviceAccount,
    identity: `spiffe://${trustDomain}/ns/${w.namespace}/sa/${serviceAccount}`,
    node: w.node ?? '',
    canonicalName: w.canonicalName || w.name,
    canonicalRevision: w.canonicalRevision || 'latest',
    workloadType: enumValue(WTYPE, w.workloadType, 'workload_type'),
    workloadName: w.workloadName || w.name,
    authorizationPolicies: [...(w.authorizationPolicies ?? [])],
    labels: labelsFromProto(w.labels, 'labels'),
    status: enumValue(STATUS, w.status, 'status'),
    clusterId: w.clusterId ?? '',
    services,
  };
}

export function serviceFromProto(s: PbService, resourceName: string): Service {
  if (!s.hostname || !s.namespace) throw new XdsError('NM_ERR_XDS_RESOURCE', 'service hostname and namespace are required');
  const key = `${s.namespace}/${s.hostname}`;
  if (key !== resourceName) throw new XdsError('NM_ERR_XDS_RESOURCE', `service key ${JSON.stringify(key)} differs from the resource name`);
  return {
    name: s.name,
    namespace: s.namespace,
    hostname: s.hostname,
    key,
    vips: (s.addresses ?? []).map((a, i) => ({ network: a.network ?? '', address: ip(a.address, `addresses[${i}]`) })),
    ports: (s.ports ?? []).map((p, i) => port(p, `ports[${i}]`)),
    subjectAltNames: [...(s.subjectAltNames ?? [])],
  };
}


export function addressFromProto(a: PbAddress, resourceName: string): AddressResource {
  if (a.workload) return { kind: 'workload', workload: workloadFromProto(a.workload, resourceName) };
  if (a.service) return { kind: 'service', service: serviceFromProto(a.service, resourceName) };
  throw new XdsError('NM_ERR_XDS_RESOURCE', 'Address has neither workload nor service set');
}

export function authorizationFromProto(a: PbAuthorization, resourceName: string): Authorization {
  if (!a.name || !a.namespace) throw new XdsError('NM_ERR_XDS_RESOURCE', 'authorization name and namespace are required');
  if (`${a.namespace}/${a.name}` !== resourceName) throw new XdsError('NM_ERR_XDS_RESOURCE', `authorization ${a.namespace}/${a.name} differs from the resource name`);
  return {
    name: a.name,
    namespace: a.namespace,
    scope: enumValue(SCOPE, a.scope, 'scope'),
    action: enumValue(ACTION, a.action, 'action'),
    dryRun: a.dryRun === true,
    rules: rulesFromProto(a.rules, 'rules', false),
    // An empty l7_rules is the same as none: the rules then serve HTTP ports too.
    ...(a.l7Rules?.length ? { l7Rules: rulesFromProto(a.l7Rules, 'l7_rules', true) } : {}),
  };
}

/** The message for a decoded Authorization (the inverse of authorizationFromProto). */
export function authorizationToProto(a: Authorization): PbAuthorization {
  return {
    name: a.name,
    namespace: a.namespace,
    scope: a.scope,
    action: a.action,
    rules: rulesToProto(a.rules),
    dryRun: a.dryRun,
    ...(a.l7Rules?.length ? { l7Rules: rulesToProto(a.l7Rules) } : {}),
  };
}
