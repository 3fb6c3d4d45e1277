// The stand-in's API semantics over the store: create/update/patch/delete/list with uid,
// resourceVersion, generation, status subresource rules, namespace lifecycle and CRD serving.
import { randomUUID } from 'node:crypto';
import { alreadyExists, badRequest, conflict, expired, invalid, KubeApiError, notFound, type KubeObject } from './errors.js';
import { applyDefaults, ClusterIpAllocator, generatedSuffix, initialStatus } from './defaults.js';
import { applyPatch } from './patch.js';
import { apiVersionOf, crdObjectFor, groupOf, kindFromCrd, resourceKey, type ResourceKind } from './resources.js';
import { parseFieldSelector, parseLabelSelector, type Matcher } from './selectors.js';
import { objectKey, Store } from './store.js';

export interface ListQuery {
  labelSelector?: string;
  fieldSelector?: string;
  limit?: number;
  continue?: string;
  resourceVersion?: string;
  resourceVersionMatch?: string;
}
export interface ListResult { items: KubeObject[]; rv: number; continue?: string; remainingItemCount?: number }
/** fromApi: an HTTP client's write (status is dropped on create and ignored on a main-resource update, as the real server does). */
export interface WriteOpts { fromApi: boolean; subresource?: 'status' }

const CRD_KEY = 'apiextensions.k8s.io/customresourcedefinitions';
const NS_KEY = '/namespaces';
const now = (): string => new Date().toISOString().replace(/\.\d+Z$/, 'Z');
const clone = <T>(v: T): T => structuredClone(v);
/** Everything but metadata and status: what bumps metadata.generation when it changes. */
/** JSON with sorted keys, so two objects compare equal whatever order their fields came in. */
const canon = (v: unknown): string => JSON.stringify(v, (_k, x: unknown) => (x && typeof x === 'object' && !Array.isArray(x) ? Object.fromEntries(Object.entries(x).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) : x));
const specPart = (o: KubeObject): string => { const { metadata: _m, status: _s, apiVersion: _a, kind: _k, ...rest } = o; return canon(rest); };

export class Cluster {
  readonly store = new Store();
  readonly ips = new ClusterIpAllocator();
  #kinds: ResourceKind[] = [];
  #removedListeners = new Set<(r: ResourceKind) => void>();

  constructor(kinds: readonly ResourceKind[]) {
    for (const r of kinds) if (!r.crd || !kinds.some((k) => resourceKey(k) === CRD_KEY)) this.#kinds.push(r);
    // CRD-backed kinds are served because their CustomResourceDefinition exists, as on a cluster.
    const crds = this.#kinds.find((k) => resourceKey(k) === CRD_KEY);
    if (crds) for (const r of kinds) if (r.crd) this.create(crds, undefined, crdObjectFor(r), { fromApi: false });
  }

  kinds(): readonly ResourceKind[] { return this.#kinds; }
  onKindRemoved(l: (r: ResourceKind) => void): void { this.#removedListeners.add(l); }

  find(group: string, version: string, plural: string): ResourceKind | undefined {
    return this.#kinds.find((r) => r.group === group && r.plural === plural && r.versions.includes(version));
  }
  findKind(apiVersion: string, kind: string): ResourceKind {
    const { group, version } = groupOf(apiVersion);
    const r = this.#kinds.find((k) => k.group === group && k.kind === kind && k.versions.includes(version));
    if (!r) throw new KubeApiError(404, 'NotFound', `the server could not find the requested resource (${kind} ${apiVersion} is not served)`);
    return r;
  }

  /** A copy with apiVersion set to the version asked for (one stored form, no conversion). */
  render(o: KubeObject, version?: string, r?: ResourceKind): KubeObject {
    const c = clone(o);
    if (version && r) c.apiVersion = apiVersionOf(r.group, version);
    return c;
  }

  get(r: ResourceKind, ns: string | undefined, name: string): KubeObject {
    const o = this.store.get(resourceKey(r), objectKey(r.namespaced ? ns : undefined, name));
    if (!o) throw notFound(r.plural, r.group, name);
    return o;
  }

  matcher(r: ResourceKind, ns: string | undefined, labelSelector?: string, fieldSelector?: string): Matcher {
    const l = labelSelector ? parseLabelSelector(labelSelector) : undefined;
    const f = fieldSelector ? parseFieldSelector(fieldSelector, r) : undefined;
    return (o) => (!ns || o.metadata.namespace === ns) && (!l || l(o)) && (!f || f(o));
  }

  list(r: ResourceKind, ns: string | undefined, q: ListQuery): ListResult {
    const match = this.matcher(r, r.namespaced ? ns : undefined, q.labelSelector, q.fieldSelector);
    if (q.resourceVersionMatch && !q.resourceVersion) throw badRequest('resourceVersionMatch is forbidden unless resourceVersion is provided');
    let rv = this.store.rv;
    let start = '';
    let rows: [string, KubeObject][];
    if (q.continue) {
      let tok: { rv?: number; start?: string };
      try { tok = JSON.parse(Buffer.from(q.continue, 'base64url').toString()) as typeof tok; } catch { throw badRequest('continue key is not valid: illegal base64 data'); }
      rv = Number(tok.rv);
      start = String(tok.start ?? '');
      if (rv < this.store.compactedRv) throw expired('The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.');
      rows = this.store.allAt(resourceKey(r), rv) ?? [];
    } else if (q.resourceVersionMatch === 'Exact') {
      rv = Number(q.resourceVersion);
      if (rv > this.store.rv) throw new KubeApiError(504, 'Timeout', `Too large resource version: ${rv}, current: ${this.store.rv}`);
      const at = this.store.allAt(resourceKey(r), rv);
      if (!at) throw expired(`too old resource version: ${rv} (${this.store.compactedRv})`);
      rows = at;
    } else {
      rows = this.store.all(resourceKey(r));
    }
    const matched = rows.filter(([k, o]) => k > start && match(o));
    const limit = q.limit && q.limit > 0 ? q.limit : matched.length;
    const page = matched.slice(0, limit);
    const more = matched.length - page.length;
    const items = page.map(([, o]) => {
      const c = clone(o);
      // The real server leaves kind and apiVersion out of built-in list items; custom resources keep them.
      if (!r.crd) { delete (c as Partial<KubeObject>).kind; delete (c as Partial<KubeObject>).apiVersion; }
      return c;
    });
    const out: ListResult = { items, rv };
    if (more > 0) {
      out.continue = Buffer.from(JSON.stringify({ rv, start: page[page.length - 1]![0] })).toString('base64url');
      out.remainingItemCount = more;
    }
    return out;
  }

  #checkTypeMeta(r: ResourceKind, o: KubeObject, version: string | undefined): void {
    const want = apiVersionOf(r.group, version ?? r.versions[0]!);
    o.apiVersion ||= want;
    o.kind ||= r.kind;
    const { group, version: v } = groupOf(o.apiVersion);
    if (o.kind !== r.kind || group !== r.group || !r.versions.includes(v)) {
      throw badRequest(`the API version in the data (${o.apiVersion}) does not match the expected API version (${want})`);
    }
    o.apiVersion = apiVersionOf(r.group, r.versions[0]!);
  }

  create(r: ResourceKind, ns: string | undefined, body: KubeObject, opts: WriteOpts & { version?: string }): KubeObject {
    const o = clone(body);
    o.metadata = { ...(o.metadata ?? {}) } as KubeObject['metadata'];
    this.#checkTypeMeta(r, o, opts.version);
    const md = o.metadata;
    if (r.namespaced) {
      const want = ns ?? md.namespace ?? 'default';
      if (md.namespace && md.namespace !== want) throw badRequest('the namespace of the provided object does not match the namespace sent on the request');
      md.namespace = want;
      if (this.#kinds.some((k) => resourceKey(k) === NS_KEY) && !this.store.get(NS_KEY, objectKey(undefined, want))) throw notFound('namespaces', '', want);
    } else delete md.namespace;
    if (!md.name && typeof md.generateName === 'string' && md.generateName) md.name = md.generateName + generatedSuffix();
    if (!md.name) throw invalid(r.kind, r.group, '', 'metadata.name', 'Required value: name or generateName is required');
    const key = resourceKey(r);
    if (this.store.get(key, objectKey(md.namespace, md.name))) throw alreadyExists(r.plural, r.group, md.name);
    md.uid = randomUUID();
    md.creationTimestamp = now();
    md.generation = 1;
    delete md.resourceVersion;
    delete md.deletionTimestamp;
    if (opts.fromApi || o.status === undefined) {
      const s = initialStatus(r.kind);
      if (s === undefined) delete o.status;
      else o.status = s;
    }
    applyDefaults(o, this.ips);
    if (key === CRD_KEY) this.#serveCrd(o);
    const stored = this.store.write(key, 'ADDED', o);
    if (key === NS_KEY && this.#kinds.some((k) => resourceKey(k) === '/serviceaccounts')) {
      // The ServiceAccount controller gives every namespace a "default" ServiceAccount.
      const sa = this.#kinds.find((k) => resourceKey(k) === '/serviceaccounts')!;
      this.create(sa, md.name, { apiVersion: 'v1', kind: 'ServiceAccount', metadata: { name: 'default', namespace: md.name } }, { fromApi: false });
    }
    return stored;
  }

  update(r: ResourceKind, ns: string | undefined, name: string, body: KubeObject, opts: WriteOpts & { version?: string }): KubeObject {
    const old = this.get(r, ns, name);
    const o = clone(body);
    o.metadata = { ...(o.metadata ?? {}) } as KubeObject['metadata'];
    this.#checkTypeMeta(r, o, opts.version);
    if (o.metadata.name && o.metadata.name !== name) throw badRequest(`the name of the object (${o.metadata.name}) does not match the name on the URL (${name})`);
    if (r.namespaced && o.metadata.namespace && o.metadata.namespace !== old.metadata.namespace) {
      throw badRequest('the namespace of the provided object does not match the namespace sent on the request');
    }
    if (o.metadata.resourceVersion && o.metadata.resourceVersion !== old.metadata.resourceVersion) throw conflict(r.plural, r.group, name);
    let next: KubeObject;
    if (opts.subresource === 'status') {
      next = { ...clone(old), status: o.status };
      if (o.status === undefined) delete next.status;
    } else {
      next = o;
      if (opts.fromApi && r.subresources.includes('status')) {
        if (old.status === undefined) delete next.status;
        else next.status = clone(old.status);
      }
    }
    const keep = ['name', 'namespace', 'uid', 'creationTimestamp', 'generation', 'resourceVersion'] as const;
    for (const k of keep) if (old.metadata[k] !== undefined) (next.metadata as Record<string, unknown>)[k] = old.metadata[k];
    if (!r.namespaced) delete next.metadata.namespace;
    applyDefaults(next, this.ips, old);
    if (specPart(next) !== specPart(old)) next.metadata.generation = Number(old.metadata.generation ?? 1) + 1;
    // A write that changes nothing is not a write: no new resourceVersion, no watch event.
    if (canon(next) === canon(old)) return old;
    if (resourceKey(r) === CRD_KEY) this.#serveCrd(next);
    return this.store.write(resourceKey(r), 'MODIFIED', next);
  }

  patch(r: ResourceKind, ns: string | undefined, name: string, contentType: string, body: unknown, opts: WriteOpts & { version?: string }): KubeObject {
    const old = this.get(r, ns, name);
    const patched = applyPatch(contentType, this.render(old, opts.version, r), body) as KubeObject;
    if (!patched || typeof patched !== 'object' || typeof patched.metadata !== 'object') throw badRequest('the patch did not produce an object');
    // A resourceVersion the patch sets is a precondition, as for an update.
    const rv = patched.metadata.resourceVersion;
    if (rv !== undefined && rv !== old.metadata.resourceVersion) throw conflict(r.plural, r.group, name);
    return this.update(r, ns, name, patched, opts);
  }

  /** pods/binding: what the scheduler does, once per pod. */
  bind(r: ResourceKind, ns: string, name: string, node: string): void {
    const pod = this.get(r, ns, name);
    const spec = (pod.spec ?? {}) as Record<string, unknown>;
    if (spec.nodeName) throw new KubeApiError(409, 'Conflict', `Operation cannot be fulfilled on pods/binding "${name}": pod ${name} is already assigned to node "${String(spec.nodeName)}"`);
    this.store.write(resourceKey(r), 'MODIFIED', { ...clone(pod), spec: { ...spec, nodeName: node } });
  }

  delete(r: ResourceKind, ns: string | undefined, name: string, pre?: { uid?: string; resourceVersion?: string }): KubeObject {
    const old = this.get(r, ns, name);
    if (pre?.uid && pre.uid !== old.metadata.uid) {
      throw new KubeApiError(409, 'Conflict', `Operation cannot be fulfilled on ${r.plural} "${name}": Precondition failed: UID in precondition: ${pre.uid}, UID in object meta: ${old.metadata.uid}`);
    }
    if (pre?.resourceVersion && pre.resourceVersion !== old.metadata.resourceVersion) {
      throw new KubeApiError(409, 'Conflict', `Operation cannot be fulfilled on ${r.plural} "${name}": Precondition failed: ResourceVersion in precondition: ${pre.resourceVersion}, ResourceVersion in meta: ${old.metadata.resourceVersion}`);
    }
    const key = resourceKey(r);
    if (key === NS_KEY) {
      // The namespace controller's work, done at once: everything in the namespace goes first.
      for (const k of this.#kinds) {
        if (!k.namespaced) continue;
        for (const [, o] of this.store.all(resourceKey(k))) if (o.metadata.namespace === name) this.#remove(k, o);
      }
    }
    let removed: ResourceKind | undefined;
    if (key === CRD_KEY) {
      removed = this.#kinds.find((k) => k.crd && `${k.plural}.${k.group}` === name);
      if (removed) for (const [, o] of this.store.all(resourceKey(removed))) this.#remove(removed, o);
    }
    const gone = this.#remove(r, old);
    if (removed) {
      this.#kinds = this.#kinds.filter((k) => k !== removed);
      for (const l of this.#removedListeners) l(removed);
    }
    return gone;
  }

  #remove(r: ResourceKind, o: KubeObject): KubeObject {
    if (r.kind === 'Service') this.ips.release((o.spec as { clusterIP?: string } | undefined)?.clusterIP);
    return this.store.write(resourceKey(r), 'DELETED', o);
  }

  #serveCrd(o: KubeObject): void {
    const k = kindFromCrd(o);
    if (!k.group || !k.plural || !k.kind || !k.versions.length) throw invalid('CustomResourceDefinition', 'apiextensions.k8s.io', o.metadata.name, 'spec', 'Required value: group, names and at least one served version');
    if (o.metadata.name !== `${k.plural}.${k.group}`) throw invalid('CustomResourceDefinition', 'apiextensions.k8s.io', o.metadata.name, 'metadata.name', `Invalid value: "${o.metadata.name}": must be spec.names.plural+"."+spec.group`);
    this.#kinds = [...this.#kinds.filter((x) => !(x.crd && resourceKey(x) === resourceKey(k))), k];
  }
}
