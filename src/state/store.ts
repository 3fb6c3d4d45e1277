// The data plane's store of workloads, services, policies, L7 routes and RequestAuthentications.
// Every change goes through one updater (ProxyState.update), which emits one `change` event per
// batch; readers only read.
import { EventEmitter } from 'node:events';
import { missingPolicies, policyKey, rejectionApplies, selectPolicies, type Authorization, type RejectedResource, type RequestAuthentication } from './policy.js';
import type { ServiceRoutes } from './routes.js';
import type { AddressResource, Service, Workload } from './types.js';

export interface KeyChanges {
  upserted: string[];
  removed: string[];
}

/** What one update batch changed, by resource key (workload uid, `ns/hostname`, `ns/name`). */
export interface StateChange {
  workloads: KeyChanges;
  services: KeyChanges;
  policies: KeyChanges;
  /** ServiceRoutes, by the Service's `ns/hostname`. */
  routes: KeyChanges;
  /** RequestAuthentications, by `ns/name`. */
  requestAuthns: KeyChanges;
  /** Rejections recorded (upserted) or lifted (removed), by `<kind>:<name>`. */
  rejected: KeyChanges;
}

/** The only way to change a ProxyState; obtained inside ProxyState.update. */
export interface ProxyStateUpdater {
  /** Inserts or replaces a workload or service under its resource name. */
  insertAddress(name: string, resource: AddressResource): void;
  /** Removes the workload or service with this resource name, if any. */
  removeAddress(name: string): void;
  insertAuthorization(policy: Authorization): void;
  /** Removes the policy with key `ns/name`, if any. */
  removeAuthorization(key: string): void;
  /** Inserts or replaces the routes of the Service `routes.service`. */
  insertRoutes(routes: ServiceRoutes): void;
  /** Removes the routes of the Service `ns/hostname`, if any. */
  removeRoutes(serviceKey: string): void;
  insertRequestAuthn(policy: RequestAuthentication): void;
  /** Removes the RequestAuthentication with key `ns/name`, if any. */
  removeRequestAuthn(key: string): void;
  /**
   * Records that the latest version of a resource was rejected. Its last good version stays;
   * the rejection is lifted when a valid version of it arrives or it is removed.
   */
  reject(r: RejectedResource): void;
}

/** What authorizing a connection to a workload needs to know. */
export interface PolicyView {
  /** The policies that apply (selectPolicies). */
  policies: Authorization[];
  /** Policies the workload names that are not here: nothing may be decided on the rest. */
  missing: string[];
  /** Rejected resources that may bear on the workload: nothing may be decided either. */
  rejected: RejectedResource[];
}

export interface ProxyStateSnapshot {
  workloads: Workload[];
  services: Service[];
  policies: Authorization[];
  routes: ServiceRoutes[];
  requestAuthns: RequestAuthentication[];
}

const emptyChange = (): StateChange => ({
  workloads: { upserted: [], removed: [] },
  services: { upserted: [], removed: [] },
  policies: { upserted: [], removed: [] },
  routes: { upserted: [], removed: [] },
  requestAuthns: { upserted: [], removed: [] },
  rejected: { upserted: [], removed: [] },
});

const rejectionKey = (kind: RejectedResource['kind'], name: string): string => `${kind}:${name}`;

export class ProxyState extends EventEmitter<{ change: [StateChange] }> {
  #workloads = new Map<string, Workload>();
  #workloadsByIp = new Map<string, Workload>();
  #services = new Map<string, Service>();
  #servicesByVip = new Map<string, Service>();
  #policies = new Map<string, Authorization>();
  #routes = new Map<string, ServiceRoutes>();
  #requestAuthns = new Map<string, RequestAuthentication>();
  #rejected = new Map<string, RejectedResource>();
  #views = new WeakMap<object, PolicyView>();

  workloadByUid(uid: string): Workload | undefined {
    return this.#workloads.get(uid);
  }

  workloadByIp(ip: string): Workload | undefined {
    return this.#workloadsByIp.get(ip);
  }

  /** By `ns/hostname`, e.g. `default/web.default.svc.cluster.local`. */
  serviceByHostname(key: string): Service | undefined {
    return this.#services.get(key);
  }

  serviceByVip(ip: string): Service | undefined {
    return this.#servicesByVip.get(ip);
  }

  /** By `ns/name`. */
  policy(key: string): Authorization | undefined {
    return this.#policies.get(key);
  }

  workloads(): IterableIterator<Workload> {
    return this.#workloads.values();
  }

  services(): IterableIterator<Service> {
    return this.#services.values();
  }

  policies(): IterableIterator<Authorization> {
    return this.#policies.values();
  }

  /** The L7 routes and traffic policy of a Service (`ns/hostname`); none: plain L4 balancing. */
  routesOf(serviceKey: string): ServiceRoutes | undefined {
    return this.#routes.get(serviceKey);
  }

  serviceRoutes(): IterableIterator<ServiceRoutes> {
    return this.#routes.values();
  }

  /** By `ns/name`. */
  requestAuthn(key: string): RequestAuthentication | undefined {
    return this.#requestAuthns.get(key);
  }

  /** Every RequestAuthentication; which apply to a workload is its scope and selector. */
  requestAuthentications(): IterableIterator<RequestAuthentication> {
    return this.#requestAuthns.values();
  }

  /** The workloads backing a service (`ns/hostname`). */
  endpointsOf(serviceKey: string): Workload[] {
    return [...this.#workloads.values()].filter((w) => serviceKey in w.services);
  }

  /** GLOBAL, the workload's namespace's NAMESPACE, and its WORKLOAD_SELECTOR policies. */
  policiesFor(w: Pick<Workload, 'namespace' | 'authorizationPolicies'>): Authorization[] {
    return selectPolicies(this.#policies.values(), w);
  }

  /** Resources whose latest version was rejected, each with the reason. */
  rejected(): RejectedResource[] {
    return [...this.#rejected.values()];
  }

  /** The policies for a destination workload, and anything that forbids deciding on them. */
  policyView(w: Pick<Workload, 'uid' | 'namespace' | 'authorizationPolicies'>): PolicyView {
    // Asked per connection and per HTTP request: kept per workload object until the next update.
    const cached = this.#views.get(w);
    if (cached) return cached;
    const rejected: RejectedResource[] = [];
    for (const r of this.#rejected.values()) if (rejectionApplies(r, w)) rejected.push(r);
    const view = { policies: selectPolicies(this.#policies.values(), w), missing: missingPolicies((k) => this.#policies.has(k), w), rejected };
    this.#views.set(w, view);
    return view;
  }

  snapshot(): ProxyStateSnapshot {
    return {
      workloads: [...this.#workloads.values()],
      services: [...this.#services.values()],
      policies: [...this.#policies.values()],
      routes: [...this.#routes.values()],
      requestAuthns: [...this.#requestAuthns.values()],
    };
  }

  /** Runs `fn` with the updater and emits one `change` event when anything changed. */
  update(fn: (u: ProxyStateUpdater) => void): StateChange {
    // Any change may change any view; a batch that throws half-way has changed things too.
    this.#views = new WeakMap();
    const change = emptyChange();
    const lift = (kind: RejectedResource['kind'], name: string): void => {
      const key = rejectionKey(kind, name);
      if (this.#rejected.delete(key)) change.rejected.removed.push(key);
    };
    const u: ProxyStateUpdater = {
      insertAddress: (name, r) => {
        if (r.kind === 'workload') {
          if (this.#deleteService(name)) change.services.removed.push(name);
          this.#deleteWorkload(name);
          this.#workloads.set(name, r.workload);
          for (const ip of r.workload.addresses) this.#workloadsByIp.set(ip, r.workload);
          change.workloads.upserted.push(name);
          lift('address', name);
        } else {
          if (this.#deleteWorkload(name)) change.workloads.removed.push(name);
          this.#deleteService(name);
          this.#services.set(name, r.service);
          for (const v of r.service.vips) this.#servicesByVip.set(v.address, r.service);
          change.services.upserted.push(name);
          lift('address', name);
        }
      },
      removeAddress: (name) => {
        if (this.#deleteWorkload(name)) change.workloads.removed.push(name);
        if (this.#deleteService(name)) change.services.removed.push(name);
        lift('address', name);
      },
      insertAuthorization: (p) => {
        const key = policyKey(p);
        this.#policies.set(key, p);
        change.policies.upserted.push(key);
        lift('authorization', key);
      },
      removeAuthorization: (key) => {
        if (this.#policies.delete(key)) change.policies.removed.push(key);
        lift('authorization', key);
      },
      insertRoutes: (r) => {
        this.#routes.set(r.service, r);
        change.routes.upserted.push(r.service);
        lift('routes', r.service);
      },
      removeRoutes: (key) => {
        if (this.#routes.delete(key)) change.routes.removed.push(key);
        lift('routes', key);
      },
      insertRequestAuthn: (p) => {
        const key = policyKey(p);
        this.#requestAuthns.set(key, p);
        change.requestAuthns.upserted.push(key);
        lift('requestAuthentication', key);
      },
      removeRequestAuthn: (key) => {
        if (this.#requestAuthns.delete(key)) change.requestAuthns.removed.push(key);
        lift('requestAuthentication', key);
      },
      reject: (r) => {
        const key = rejectionKey(r.kind, r.name);
        this.#rejected.set(key, { ...r });
        change.rejected.upserted.push(key);
      },
    };
    try {
      fn(u);
    } finally {
      // A view read by fn itself saw the batch half-done.
      this.#views = new WeakMap();
    }
    const any = Object.values(change).some((c: KeyChanges) => c.upserted.length + c.removed.length > 0);
    if (any) this.emit('change', change);
    return change;
  }

  #deleteWorkload(uid: string): boolean {
    const old = this.#workloads.get(uid);
    if (!old) return false;
    this.#workloads.delete(uid);
    for (const ip of old.addresses) {
      if (this.#workloadsByIp.get(ip) === old) {
        this.#workloadsByIp.delete(ip);
        // Another workload may share the IP (e.g. a pod being replaced): keep it findable.
        for (const w of this.#workloads.values()) if (w.addresses.includes(ip)) this.#workloadsByIp.set(ip, w);
      }
    }
    return true;
  }

  #deleteService(key: string): boolean {
    const old = this.#services.get(key);
    if (!old) return false;
    this.#services.delete(key);
    for (const v of old.vips) {
      if (this.#servicesByVip.get(v.address) === old) {
        this.#servicesByVip.delete(v.address);
        for (const s of this.#services.values()) if (s.vips.some((x) => x.address === v.address)) this.#servicesByVip.set(v.address, s);
      }
    }
    return true;
  }
}
