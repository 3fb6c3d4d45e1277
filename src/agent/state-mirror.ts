// A ProxyState mirrored into another thread (the proxy workers, proxy-worker.ts): each change
// batch of the source becomes one list of operations that bring a mirror to the same state,
// applied there in one update (one `change` event, as at the source). Operations carry the
// source's current value of every key the batch touched, so a key upserted and removed in the
// same batch ends removed, and a rejection recorded after an upsert stays recorded.
import type { Authorization, ProxyState, ProxyStateUpdater, RejectedResource, RequestAuthentication, ServiceRoutes, StateChange } from '../state/index.js';
import type { AddressResource } from '../state/index.js';

export type StateOp =
  | { op: 'address'; name: string; resource: AddressResource }
  | { op: 'removeAddress'; name: string }
  | { op: 'authorization'; policy: Authorization }
  | { op: 'removeAuthorization'; key: string }
  | { op: 'routes'; routes: ServiceRoutes }
  | { op: 'removeRoutes'; key: string }
  | { op: 'requestAuthn'; policy: RequestAuthentication }
  | { op: 'removeRequestAuthn'; key: string }
  | { op: 'reject'; rejection: RejectedResource };

const touched = (c: { upserted: string[]; removed: string[] }): Set<string> => new Set([...c.upserted, ...c.removed]);

/** The operations that replay one change batch of `state` (call from its `change` event). */
export function changeOps(state: ProxyState, c: StateChange): StateOp[] {
  const ops: StateOp[] = [];
  for (const name of new Set([...touched(c.workloads), ...touched(c.services)])) {
    const w = state.workloadByUid(name);
    const s = w ? undefined : state.serviceByHostname(name);
    if (w) ops.push({ op: 'address', name, resource: { kind: 'workload', workload: w } });
    else if (s) ops.push({ op: 'address', name, resource: { kind: 'service', service: s } });
    else ops.push({ op: 'removeAddress', name });
  }
  for (const key of touched(c.policies)) {
    const p = state.policy(key);
    ops.push(p ? { op: 'authorization', policy: p } : { op: 'removeAuthorization', key });
  }
  for (const key of touched(c.routes)) {
    const r = state.routesOf(key);
    ops.push(r ? { op: 'routes', routes: r } : { op: 'removeRoutes', key });
  }
  for (const key of touched(c.requestAuthns)) {
    const p = state.requestAuthn(key);
    ops.push(p ? { op: 'requestAuthn', policy: p } : { op: 'removeRequestAuthn', key });
  }
  // A rejection lifted by removing a resource the source never held leaves no other trace:
  // the same remove (or the resource as it is now) lifts it in the mirror.
  const done = new Set([...touched(c.workloads), ...touched(c.services)].map((n) => `address:${n}`));
  for (const key of touched(c.policies)) done.add(`authorization:${key}`);
  for (const key of touched(c.routes)) done.add(`routes:${key}`);
  for (const key of touched(c.requestAuthns)) done.add(`requestAuthentication:${key}`);
  for (const key of c.rejected.removed) if (!done.has(key)) ops.push(...lift(state, key));
  // Last: an upsert above lifts its resource's rejection, as it did at the source.
  if (c.rejected.upserted.length) {
    const now = new Map(state.rejected().map((r) => [`${r.kind}:${r.name}`, r]));
    for (const key of new Set(c.rejected.upserted)) {
      const r = now.get(key);
      if (r) ops.push({ op: 'reject', rejection: r });
    }
  }
  return ops;
}

/** Operations that lift the rejection `<kind>:<name>` in a mirror, leaving the resource as the source has it. */
function lift(state: ProxyState, key: string): StateOp[] {
  const at = key.indexOf(':');
  const kind = key.slice(0, at);
  const name = key.slice(at + 1);
  switch (kind) {
    case 'address': {
      const w = state.workloadByUid(name);
      const s = w ? undefined : state.serviceByHostname(name);
      if (w) return [{ op: 'address', name, resource: { kind: 'workload', workload: w } }];
      if (s) return [{ op: 'address', name, resource: { kind: 'service', service: s } }];
      return [{ op: 'removeAddress', name }];
    }
    case 'authorization': {
      const p = state.policy(name);
      return [p ? { op: 'authorization', policy: p } : { op: 'removeAuthorization', key: name }];
    }
    case 'routes': {
      const r = state.routesOf(name);
      return [r ? { op: 'routes', routes: r } : { op: 'removeRoutes', key: name }];
    }
    case 'requestAuthentication': {
      const p = state.requestAuthn(name);
      return [p ? { op: 'requestAuthn', policy: p } : { op: 'removeRequestAuthn', key: name }];
    }
    default:
      return [];
  }
}

/** Everything `state` holds, as operations for an empty mirror. */
export function fullOps(state: ProxyState): StateOp[] {
  const snap = state.snapshot();
  return [
    ...snap.workloads.map((w): StateOp => ({ op: 'address', name: w.uid, resource: { kind: 'workload', workload: w } })),
    ...snap.services.map((s): StateOp => ({ op: 'address', name: s.key, resource: { kind: 'service', service: s } })),
    ...snap.policies.map((p): StateOp => ({ op: 'authorization', policy: p })),
    ...snap.routes.map((r): StateOp => ({ op: 'routes', routes: r })),
    ...snap.requestAuthns.map((p): StateOp => ({ op: 'requestAuthn', policy: p })),
    ...state.rejected().map((r): StateOp => ({ op: 'reject', rejection: r })),
  ];
}

function apply(u: ProxyStateUpdater, o: StateOp): void {
  switch (o.op) {
    case 'address': return u.insertAddress(o.name, o.resource);
    case 'removeAddress': return u.removeAddress(o.name);
    case 'authorization': return u.insertAuthorization(o.policy);
    case 'removeAuthorization': return u.removeAuthorization(o.key);
    case 'routes': return u.insertRoutes(o.routes);
    case 'removeRoutes': return u.removeRoutes(o.key);
    case 'requestAuthn': return u.insertRequestAuthn(o.policy);
    case 'removeRequestAuthn': return u.removeRequestAuthn(o.key);
    case 'reject': return u.reject(o.rejection);
  }
}

/** Applies operations to a mirror in one update batch. */
export function applyOps(mirror: ProxyState, ops: readonly StateOp[]): StateChange {
  return mirror.update((u) => {
    for (const o of ops) apply(u, o);
  });
}
