// What the route compilers share while they run: the Services, each Service's rules and tables
// as they are built, the DestinationRule chosen per Service, and the problems found.
import { formatPath, type FieldPath, type Service } from '../k8s/index.js';
import type { RouteEntry, RouteRule, RouteTable, TrafficPolicy } from '../state/index.js';
import type { RouteNote } from './resources.js';
import { serviceKey, type MeshSettings } from './translate.js';
import { describe, type ConfigProblem, type ProblemCode } from './validate.js';

/** The suffix of a backend key that names no Service: the proxy resolves it to nothing (500). */
export const UNRESOLVED_SUFFIX = '.invalid';
/** The label a backend naming an unknown subset is given: no endpoint carries it, so none is chosen. */
export const UNKNOWN_SUBSET_LABEL = 'nodemesh.io/unknown-subset';

/** `ns/name.invalid`: RFC 2606 reserves `.invalid`, so no Service hostname is ever this key. */
export function unresolvedKey(ns: string, name: string): string {
  return `${ns}/${name}${UNRESOLVED_SUFFIX}`;
}

export interface CompileOptions {
  /**
   * Backends in another namespace than their route's. GAMMA allows them without a ReferenceGrant
   * (GEP-1294 "Namespace boundaries"; the MeshConsumerRoute conformance test relies on it; istiod
   * does not enforce grants for mesh routes): `allow`, the default. `refuse` treats them as
   * unresolved (500), for meshes that want ReferenceGrant semantics (grants are not read yet).
   */
  crossNamespaceBackends?: 'allow' | 'refuse';
}

type Resource = { kind: string; metadata: { namespace: string; name: string }; source: { file: string; line: number } };

export interface ResolvedSubsets {
  trafficPolicy?: TrafficPolicy;
  subsets: Array<{ name: string; labels: Record<string, string>; trafficPolicy?: TrafficPolicy }>;
}

/** One Service's routes under construction. */
export class ServiceBuilder {
  readonly rules: RouteRule[] = [];
  readonly #index = new Map<RouteRule, number>();
  /** By `port|consumerNamespace`; `origin` says which API filled the table. */
  readonly tables = new Map<string, { table: RouteTable; origin: 'HTTPRoute' | 'VirtualService' }>();
  policy?: ResolvedSubsets;

  constructor(
    readonly service: Service,
    readonly key: string,
  ) {}

  /** The index of a rule in `rules`, adding it the first time. */
  ruleIndex(rule: RouteRule): number {
    let i = this.#index.get(rule);
    if (i === undefined) {
      i = this.rules.push(rule) - 1;
      this.#index.set(rule, i);
    }
    return i;
  }

  table(port: number, consumerNamespace: string | undefined): { table: RouteTable; origin: 'HTTPRoute' | 'VirtualService' } | undefined {
    return this.tables.get(`${port}|${consumerNamespace ?? ''}`);
  }

  setTable(port: number, consumerNamespace: string | undefined, entries: RouteEntry[], origin: 'HTTPRoute' | 'VirtualService'): void {
    this.tables.set(`${port}|${consumerNamespace ?? ''}`, { table: { port, ...(consumerNamespace !== undefined ? { consumerNamespace } : {}), entries }, origin });
  }
}

export class CompileContext {
  readonly problems: ConfigProblem[] = [];
  readonly #services = new Map<string, Service>();
  readonly #builders = new Map<string, ServiceBuilder>();

  constructor(
    readonly mesh: MeshSettings,
    services: readonly Service[],
    readonly options: CompileOptions,
  ) {
    for (const s of services) this.#services.set(`${s.metadata.namespace}/${s.metadata.name}`, s);
  }

  service(ns: string, name: string): Service | undefined {
    return this.#services.get(`${ns}/${name}`);
  }

  builder(svc: Service): ServiceBuilder {
    const id = `${svc.metadata.namespace}/${svc.metadata.name}`;
    let b = this.#builders.get(id);
    if (!b) {
      b = new ServiceBuilder(svc, serviceKey(this.mesh, svc));
      this.#builders.set(id, b);
    }
    return b;
  }

  builders(): ServiceBuilder[] {
    return [...this.#builders.values()];
  }

  /**
   * The Service an Istio host names, relative to the resource's namespace: `name` (that
   * namespace), `name.ns`, `name.ns.svc` or `name.ns.svc.<cluster domain>`. Undefined for
   * wildcards and hosts that are no Service here.
   */
  serviceForHost(host: string, ns: string): Service | undefined {
    const h = host.toLowerCase().replace(/\.$/, '');
    if (h.includes('*')) return undefined;
    const parts = h.split('.');
    if (parts.length === 1) return this.service(ns, parts[0]!);
    const domain = this.mesh.clusterDomain.toLowerCase();
    if (parts.length === 2 || (parts.length === 3 && parts[2] === 'svc') || (parts[2] === 'svc' && parts.slice(3).join('.') === domain)) {
      return this.service(parts[1]!, parts[0]!);
    }
    return undefined;
  }

  /** Records a problem about a resource, at a line of its file. */
  report(o: Resource, severity: ConfigProblem['severity'], code: ProblemCode, line: number, message: string, path?: FieldPath): void {
    const name = describe(o);
    this.problems.push({ code, severity, file: o.source.file, line, message: `${name}: ${path && path.length > 0 ? `${formatPath(path)}: ` : ''}${message}`, resource: name });
  }

  reportNotes(o: Resource, notes: readonly RouteNote[]): void {
    for (const n of notes) this.report(o, n.severity ?? 'warning', 'NM_ERR_POLICY', n.line, n.message, n.path);
  }
}

/** Oldest first (no timestamp: newest), then `ns/name`: the order conflicts are settled in. */
export function byAge<T extends { metadata: { namespace: string; name: string } }>(items: readonly T[], createdAt: (t: T) => string | undefined): T[] {
  const t = (x: T) => {
    const s = createdAt(x);
    const ms = s === undefined ? NaN : Date.parse(s);
    return Number.isNaN(ms) ? Infinity : ms;
  };
  const id = (x: T) => `${x.metadata.namespace}/${x.metadata.name}`;
  return [...items].sort((a, b) => t(a) - t(b) || (id(a) < id(b) ? -1 : id(a) > id(b) ? 1 : 0));
}

/** The TCP ports of a Service, the ones the mesh serves. */
export function tcpPorts(svc: Service): Service['spec']['ports'] {
  return svc.spec.ports.filter((p) => p.protocol === 'TCP');
}
