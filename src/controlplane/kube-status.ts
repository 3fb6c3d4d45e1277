// Status the Kubernetes source writes back where users look: HTTPRoute `status.parents[]`
// (Accepted, ResolvedRefs) for routes attached to Services (GAMMA), and the `ZtunnelAccepted`
// condition Istio gives AuthorizationPolicies its node proxies enforce. Written only when it
// differs from what the object carries, so our own write's echo causes no second write.
import type { Logger } from '../log.js';
import { objectPath, type KubeApi, type KubeKind, type Raw } from '../kube/index.js';
import { translateAuthorizationPolicy } from './authz.js';
import type { AuthorizationPolicy, HttpRoute } from './resources.js';
import type { MeshSettings } from './translate.js';
import type { ConfigObject, ConfigProblem } from './validate.js';

/** The Gateway API controllerName of our mesh (GAMMA) route handling. */
export const MESH_CONTROLLER_NAME = 'nodemesh.io/mesh-controller';
/** Istio's condition type for policies enforced by the node proxy (ztunnel) rather than a waypoint. */
export const ZTUNNEL_ACCEPTED = 'ZtunnelAccepted';

export interface StatusInput {
  raw: Raw;
  /** The version served (the last good one). */
  good?: ConfigObject;
  /** Why the current version is not served. */
  problem?: ConfigProblem;
}

interface Condition {
  type: string;
  status: 'True' | 'False';
  reason: string;
  message: string;
  observedGeneration: number | string;
  lastTransitionTime?: string;
}

type R = Record<string, unknown>;
const rec = (v: unknown): R => (v && typeof v === 'object' && !Array.isArray(v) ? (v as R) : {});
const arr = (v: unknown): unknown[] => (Array.isArray(v) ? v : []);
const generation = (raw: Raw): number => (typeof rec(raw.metadata).generation === 'number' ? (rec(raw.metadata).generation as number) : 0);

/** What a condition means, without its timestamp: what "changed" compares. */
const essence = (c: R) => JSON.stringify([c.type, c.status, c.reason, c.message, String(c.observedGeneration ?? '')]);

/** Keeps lastTransitionTime when the status of a condition did not flip. */
function stamp(next: Condition[], prev: unknown[], now: string): Condition[] {
  return next.map((c) => {
    const old = prev.map(rec).find((p) => p.type === c.type);
    return { ...c, lastTransitionTime: old && old.status === c.status && typeof old.lastTransitionTime === 'string' ? old.lastTransitionTime : now };
  });
}

// ---- HTTPRoute ------------------------------------------------------------------------------

const isServiceRef = (r: R) => r.kind === 'Service' && (r.group === undefined || r.group === '' || r.group === 'core');

/** Our `status.parents` entries for the Service parents of a route (others' entries are kept). */
export function httpRouteParents(inp: StatusInput, services: ReadonlySet<string>): R[] {
  const raw = inp.raw;
  const ns = String(rec(raw.metadata).namespace ?? 'default');
  const gen = generation(raw);
  const spec = rec(raw.spec);
  const route = inp.problem ? undefined : (inp.good as HttpRoute | undefined)?.route;
  const backends = route ? route.rules.flatMap((r) => r.backendRefs) : [];
  const unresolved = backends.filter((b) => (b.kind ?? 'Service') !== 'Service' || (b.group ?? '') !== '' || !services.has(`${b.namespace ?? ns}/${b.name}`));
  const out: R[] = [];
  for (const ref of arr(spec.parentRefs).map(rec)) {
    if (!isServiceRef(ref)) continue;
    const parent = `${typeof ref.namespace === 'string' ? ref.namespace : ns}/${String(ref.name)}`;
    let accepted: Condition;
    if (inp.problem) accepted = { type: 'Accepted', status: 'False', reason: 'UnsupportedValue', message: inp.problem.message, observedGeneration: gen };
    else if (!services.has(parent)) accepted = { type: 'Accepted', status: 'False', reason: 'NoMatchingParent', message: `Service ${parent} does not exist`, observedGeneration: gen };
    else accepted = { type: 'Accepted', status: 'True', reason: 'Accepted', message: `attached to Service ${parent}`, observedGeneration: gen };
    const resolved: Condition =
      unresolved.length === 0
        ? { type: 'ResolvedRefs', status: 'True', reason: 'ResolvedRefs', message: 'all backendRefs resolved', observedGeneration: gen }
        : unresolved.some((b) => (b.kind ?? 'Service') !== 'Service' || (b.group ?? '') !== '')
          ? { type: 'ResolvedRefs', status: 'False', reason: 'InvalidKind', message: 'only Service backendRefs are supported', observedGeneration: gen }
          : { type: 'ResolvedRefs', status: 'False', reason: 'BackendNotFound', message: `backend Service ${unresolved.map((b) => `${b.namespace ?? ns}/${b.name}`).join(', ')} not found`, observedGeneration: gen };
    out.push({ parentRef: ref, controllerName: MESH_CONTROLLER_NAME, conditions: [accepted, resolved] });
  }
  return out;
}

/** The new `status` of a route, or undefined when what it has already says the same. */
export function httpRouteStatusPatch(inp: StatusInput, services: ReadonlySet<string>, now: string): R | undefined {
  const prev = arr(rec(inp.raw.status).parents).map(rec);
  const others = prev.filter((p) => p.controllerName !== MESH_CONTROLLER_NAME);
  const oursPrev = prev.filter((p) => p.controllerName === MESH_CONTROLLER_NAME);
  const next = httpRouteParents(inp, services);
  const key = (ps: R[]) => JSON.stringify(ps.map((p) => [JSON.stringify(p.parentRef), arr(p.conditions).map(rec).map(essence).sort()]).sort());
  if (key(next) === key(oursPrev)) return undefined;
  const stamped = next.map((p) => {
    const old = oursPrev.find((o) => JSON.stringify(o.parentRef) === JSON.stringify(p.parentRef));
    return { ...p, conditions: stamp(p.conditions as Condition[], arr(old?.conditions), now) };
  });
  return { parents: [...others, ...stamped] };
}

// ---- AuthorizationPolicy --------------------------------------------------------------------

/**
 * Istio's ZtunnelAccepted condition: True/Accepted when enforced as written, True/UnsupportedValue
 * when HTTP attributes were dropped (what is enforced is stricter), False/Invalid when the
 * current version is rejected (the last good one, if any, stays enforced). Waypoint policies
 * (targetRefs) get none: no node proxy enforces them.
 */
export function ztunnelCondition(inp: StatusInput, mesh: MeshSettings): Condition | undefined {
  const gen = String(generation(inp.raw));
  const spec = rec(inp.raw.spec);
  if (spec.targetRef !== undefined || spec.targetRefs !== undefined) return undefined;
  if (inp.problem) {
    const good = inp.good ? ` The last good version (generation ${generation(inp.good.raw as Raw)}) is still enforced.` : '';
    return { type: ZTUNNEL_ACCEPTED, status: 'False', reason: 'Invalid', message: `${inp.problem.message}.${good}`, observedGeneration: gen };
  }
  if (!inp.good) return undefined;
  const warnings = translateAuthorizationPolicy(inp.good as AuthorizationPolicy, mesh).problems.filter((p) => p.severity === 'warning');
  if (warnings.length > 0) {
    return { type: ZTUNNEL_ACCEPTED, status: 'True', reason: 'UnsupportedValue', message: warnings.map((w) => w.message).join('; '), observedGeneration: gen };
  }
  return { type: ZTUNNEL_ACCEPTED, status: 'True', reason: 'Accepted', message: 'attached to the nodemesh node proxies', observedGeneration: gen };
}

export function authorizationStatusPatch(inp: StatusInput, mesh: MeshSettings, now: string): R | undefined {
  const want = ztunnelCondition(inp, mesh);
  if (!want) return undefined;
  const prev = arr(rec(inp.raw.status).conditions).map(rec);
  const old = prev.find((c) => c.type === ZTUNNEL_ACCEPTED);
  if (old && essence(old) === essence(want as unknown as R)) return undefined;
  return { conditions: [...prev.filter((c) => c.type !== ZTUNNEL_ACCEPTED), ...stamp([want], prev, now)] };
}

// ---- the writer -----------------------------------------------------------------------------

export class KubeStatusWriter {
  readonly #api: KubeApi;
  readonly #log: Logger;
  readonly #mesh: MeshSettings;
  /** Per object: the status we last wrote and the resourceVersion it was computed from. */
  readonly #written = new Map<string, { status: string; from: string }>();
  #writes = 0;

  constructor(api: KubeApi, mesh: MeshSettings, log: Logger) {
    this.#api = api;
    this.#mesh = mesh;
    this.#log = log.child({ component: 'kube-status' });
  }

  /** Status PATCH requests sent so far. */
  get writes(): number {
    return this.#writes;
  }

  /** Brings the status of every route and policy up to date; failures are logged and retried on the next change. */
  sync(kinds: { route: KubeKind; policy: KubeKind }, routes: StatusInput[], policies: StatusInput[], services: ReadonlySet<string>): void {
    const now = new Date().toISOString();
    const seen = new Set<string>();
    for (const r of routes) this.#write(kinds.route, r, httpRouteStatusPatch(r, services, now), seen);
    for (const p of policies) this.#write(kinds.policy, p, authorizationStatusPatch(p, this.#mesh, now), seen);
    for (const k of [...this.#written.keys()]) if (!seen.has(k)) this.#written.delete(k);
  }

  #write(kind: KubeKind, inp: StatusInput, status: R | undefined, seen: Set<string>): void {
    const m = rec(inp.raw.metadata);
    const ns = String(m.namespace ?? 'default');
    const name = String(m.name);
    const id = `${kind.kind}/${ns}/${name}`;
    seen.add(id);
    if (!status) return;
    const body = JSON.stringify(status, (k, v: unknown) => (k === 'lastTransitionTime' ? undefined : v));
    const rv = String(m.resourceVersion ?? '');
    const last = this.#written.get(id);
    // Written from this very version already: its echo has not arrived yet.
    if (last && last.status === body && last.from === rv) return;
    this.#written.set(id, { status: body, from: rv });
    this.#writes++;
    this.#api.request('PATCH', `${objectPath(kind, ns, name)}/status`, { status }).then(
      () => this.#log.debug({ resource: `${kind.kind} ${ns}/${name}` }, 'status written'),
      (err: Error) => {
        this.#written.delete(id);
        this.#log.warn({ resource: `${kind.kind} ${ns}/${name}`, err: err.message }, 'cannot write status; trying again on the next change');
      },
    );
  }
}
