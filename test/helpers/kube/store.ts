// The stand-in's etcd: objects per resource, one global resourceVersion counter, the event
// history watches replay from, and compaction (after which older resourceVersions are gone).
import type { KubeObject } from './errors.js';

export type EventType = 'ADDED' | 'MODIFIED' | 'DELETED';

export interface StoreEvent {
  rv: number;
  /** resourceKey(): `<group>/<plural>`. */
  resource: string;
  type: EventType;
  /** The object after the write (for DELETED: its last state, carrying the deletion's resourceVersion). */
  obj: KubeObject;
  /** The object before the write (MODIFIED and DELETED). */
  prev?: KubeObject;
}

/** Stored objects are keyed `<namespace>/<name>` ('' namespace for cluster-scoped kinds). */
export const objectKey = (ns: string | undefined, name: string): string => `${ns ?? ''}/${name}`;

export class Store {
  #rv = 0;
  #compactedRv = 0;
  #objects = new Map<string, Map<string, KubeObject>>();
  #history: StoreEvent[] = [];
  #listeners = new Set<(e: StoreEvent) => void>();
  readonly #historyLimit: number;

  /** historyLimit: events kept for watch replay; older ones are compacted away, as etcd's periodic compaction does. */
  constructor(historyLimit = 100_000) {
    this.#historyLimit = historyLimit;
  }

  get rv(): number { return this.#rv; }
  /** The oldest resourceVersion a watch or an exact list may still start from. */
  get compactedRv(): number { return this.#compactedRv; }

  #bucket(resource: string): Map<string, KubeObject> {
    let b = this.#objects.get(resource);
    if (!b) this.#objects.set(resource, (b = new Map()));
    return b;
  }

  get(resource: string, key: string): KubeObject | undefined {
    return this.#objects.get(resource)?.get(key);
  }

  /** Current objects of a resource in key order (etcd's /registry/<resource>/<ns>/<name> order). */
  all(resource: string): [string, KubeObject][] {
    return [...(this.#objects.get(resource) ?? new Map<string, KubeObject>()).entries()].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  }

  /** The objects as they were at resourceVersion `rv` (undoing newer history); undefined when compacted. */
  allAt(resource: string, rv: number): [string, KubeObject][] | undefined {
    if (rv < this.#compactedRv) return undefined;
    const m = new Map(this.#objects.get(resource) ?? []);
    for (let i = this.#history.length - 1; i >= 0 && this.#history[i]!.rv > rv; i--) {
      const e = this.#history[i]!;
      if (e.resource !== resource) continue;
      const key = objectKey(e.obj.metadata.namespace, e.obj.metadata.name);
      if (e.type === 'ADDED') m.delete(key);
      else m.set(key, e.prev!);
    }
    return [...m.entries()].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  }

  /** Writes one object (stamping the next resourceVersion) and tells every listener. */
  write(resource: string, type: EventType, obj: KubeObject): KubeObject {
    const key = objectKey(obj.metadata.namespace, obj.metadata.name);
    const bucket = this.#bucket(resource);
    const prev = bucket.get(key);
    const rv = ++this.#rv;
    const stored: KubeObject = { ...obj, metadata: { ...obj.metadata, resourceVersion: String(rv) } };
    if (type === 'DELETED') bucket.delete(key);
    else bucket.set(key, stored);
    const e: StoreEvent = { rv, resource, type, obj: stored, ...(prev ? { prev } : {}) };
    this.#history.push(e);
    if (this.#history.length > this.#historyLimit) {
      const dropped = this.#history.splice(0, this.#history.length - this.#historyLimit);
      this.#compactedRv = dropped[dropped.length - 1]!.rv;
    }
    for (const l of this.#listeners) l(e);
    return stored;
  }

  /** History newer than `rv` for one resource; undefined when `rv` is older than the compaction point. */
  since(resource: string, rv: number): StoreEvent[] | undefined {
    if (rv < this.#compactedRv) return undefined;
    return this.#history.filter((e) => e.rv > rv && e.resource === resource);
  }

  /** Forgets all history up to now, as `etcdctl compact <current revision>` does. */
  compact(): void {
    this.#compactedRv = this.#rv;
    this.#history = [];
  }

  subscribe(l: (e: StoreEvent) => void): () => void {
    this.#listeners.add(l);
    return () => this.#listeners.delete(l);
  }
}
