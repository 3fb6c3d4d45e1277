// The typed xDS resource handlers (one per type: decode, validate, apply through the state
// updater, record rejections so they deny) and the shapes of what the client holds and
// snapshots. XdsClient (client.ts) drives them for responses and for restored snapshots.
import { isNodemeshError, XdsError } from '../errors.js';
import { addressFromProto, authorizationFromProto } from './convert.js';
import { requestAuthnFromProto } from './convert-requestauthn.js';
import { serviceRoutesFromProto } from './convert-routes.js';
import { codecs, TYPE_ADDRESS, TYPE_AUTHORIZATION, TYPE_REQUEST_AUTHN, TYPE_SERVICE_ROUTES, type PbAny } from './proto.js';
import { SCOPES, type ProxyStateUpdater, type RejectedResource, type Scope } from '../state/index.js';

export interface ResourceUpdate {
  name: string;
  version: string;
  resource: PbAny;
}

export interface Rejection {
  name: string;
  reason: string;
}

/** One typed handler per resource type: applies what is valid, returns what it rejects. */
export type ResourceHandler = (u: ProxyStateUpdater, updates: ResourceUpdate[], removed: string[]) => Rejection[];

function decodeAny<T>(r: ResourceUpdate, typeUrl: string, decode: (b: Uint8Array) => T): T {
  if (r.resource.type_url !== typeUrl) throw new XdsError('NM_ERR_XDS_RESOURCE', `type_url ${JSON.stringify(r.resource.type_url)} is not ${typeUrl}`);
  try {
    return decode(r.resource.value);
  } catch (e) {
    throw new XdsError('NM_ERR_XDS_RESOURCE', `cannot decode: ${(e as Error).message}`);
  }
}

/** A rejection reason; an unexpected error rejects the resource instead of killing the agent. */
function reasonOf(e: unknown): string {
  return isNodemeshError(e, 'NM_ERR_XDS_RESOURCE') ? e.message : `internal error while applying it: ${(e as Error).message}`;
}

/**
 * Where a rejected authorization or RequestAuthentication would have applied, when its bytes
 * still decode as one: the agent then denies only what it could bear on. Undecodable, it may
 * be anything (GLOBAL too).
 */
function scopeHint(r: ResourceUpdate, typeUrl: string, decode: (b: Uint8Array) => { name: string; namespace: string; scope: unknown }): Pick<RejectedResource, 'scope' | 'namespace'> {
  try {
    if (r.resource.type_url !== typeUrl) return {};
    const a = decode(r.resource.value);
    const known = (SCOPES as readonly string[]).includes(a.scope as string);
    return known && a.namespace && `${a.namespace}/${a.name}` === r.name ? { scope: a.scope as Scope, namespace: a.namespace } : {};
  } catch {
    return {};
  }
}

/** istio.workload.Address: workloads (by uid) and services (by `ns/hostname`). */
export const handleAddresses: ResourceHandler = (u, updates, removed) => {
  const rejected: Rejection[] = [];
  for (const r of updates) {
    try {
      u.insertAddress(r.name, addressFromProto(decodeAny(r, TYPE_ADDRESS, codecs.address.decode), r.name));
    } catch (e) {
      rejected.push({ name: r.name, reason: reasonOf(e) });
      u.reject({ kind: 'address', name: r.name, reason: reasonOf(e) });
    }
  }
  for (const name of removed) u.removeAddress(name);
  return rejected;
};

/** istio.security.Authorization, by `ns/name`. */
export const handleAuthorizations: ResourceHandler = (u, updates, removed) => {
  const rejected: Rejection[] = [];
  for (const r of updates) {
    try {
      u.insertAuthorization(authorizationFromProto(decodeAny(r, TYPE_AUTHORIZATION, codecs.authorization.decode), r.name));
    } catch (e) {
      rejected.push({ name: r.name, reason: reasonOf(e) });
      u.reject({ kind: 'authorization', name: r.name, reason: reasonOf(e), ...scopeHint(r, TYPE_AUTHORIZATION, codecs.authorization.decode) });
    }
  }
  for (const name of removed) u.removeAuthorization(name);
  return rejected;
};

/** nodemesh.v1.ServiceRoutes, by the Service's `ns/hostname`. */
export const handleServiceRoutes: ResourceHandler = (u, updates, removed) => {
  const rejected: Rejection[] = [];
  for (const r of updates) {
    try {
      u.insertRoutes(serviceRoutesFromProto(decodeAny(r, TYPE_SERVICE_ROUTES, codecs.serviceRoutes.decode), r.name));
    } catch (e) {
      rejected.push({ name: r.name, reason: reasonOf(e) });
      u.reject({ kind: 'routes', name: r.name, reason: reasonOf(e) });
    }
  }
  for (const name of removed) u.removeRoutes(name);
  return rejected;
};

/** nodemesh.v1.RequestAuthentication, by `ns/name`. */
export const handleRequestAuthns: ResourceHandler = (u, updates, removed) => {
  const rejected: Rejection[] = [];
  for (const r of updates) {
    try {
      u.insertRequestAuthn(requestAuthnFromProto(decodeAny(r, TYPE_REQUEST_AUTHN, codecs.requestAuthn.decode), r.name));
    } catch (e) {
      rejected.push({ name: r.name, reason: reasonOf(e) });
      u.reject({ kind: 'requestAuthentication', name: r.name, reason: reasonOf(e), ...scopeHint(r, TYPE_REQUEST_AUTHN, codecs.requestAuthn.decode) });
    }
  }
  for (const name of removed) u.removeRequestAuthn(name);
  return rejected;
};

export const KINDS: Record<string, RejectedResource['kind']> = {
  [TYPE_ADDRESS]: 'address',
  [TYPE_AUTHORIZATION]: 'authorization',
  [TYPE_SERVICE_ROUTES]: 'routes',
  [TYPE_REQUEST_AUTHN]: 'requestAuthentication',
};

/** One resource as the client holds it: the control plane's bytes and version. */
export interface HeldResource {
  name: string;
  version: string;
  resource: PbAny;
}

/** A rejected resource as the client remembers it: its latest bytes (when it had a body) and why. */
export interface HeldRejection {
  name: string;
  version: string;
  reason: string;
  resource?: PbAny;
}

/** Everything the client holds, per type: what a restart restores (see XdsClient.restore). */
export type XdsSnapshot = Record<string, { resources: HeldResource[]; rejected: HeldRejection[] }>;
