// Picks a Service endpoint for each new connection: round robin, or least connections
// (fewest connections this node has open to it, ties broken round robin).

export type LbPolicy = 'round-robin' | 'least-conn';

export class Balancer {
  readonly policy: LbPolicy;
  readonly #cursor = new Map<string, number>();
  readonly #active = new Map<string, number>();

  constructor(policy: LbPolicy = 'round-robin') {
    this.policy = policy;
  }

  /** Chooses among `endpoints` (keys) of `service`; returns the index and a release function. */
  pick(service: string, endpoints: readonly string[]): { index: number; release: () => void } | undefined {
    if (endpoints.length === 0) return undefined;
    const start = this.#cursor.get(service) ?? 0;
    let index = start % endpoints.length;
    if (this.policy === 'least-conn') {
      let best = Infinity;
      for (let k = 0; k < endpoints.length; k++) {
        const i = (start + k) % endpoints.length;
        const n = this.#active.get(endpoints[i]!) ?? 0;
        if (n < best) {
          best = n;
          index = i;
        }
      }
    }
    this.#cursor.set(service, index + 1);
    const key = endpoints[index]!;
    this.#active.set(key, (this.#active.get(key) ?? 0) + 1);
    let released = false;
    return {
      index,
      release: () => {
        if (released) return;
        released = true;
        const n = (this.#active.get(key) ?? 1) - 1;
        if (n <= 0) this.#active.delete(key);
        else this.#active.set(key, n);
      },
    };
  }

  /** Drops a service's round-robin cursor (the service left the state). */
  forget(service: string): void {
    this.#cursor.delete(service);
  }

  /** Services with a cursor: those picked from since they last left. */
  get services(): number {
    return this.#cursor.size;
  }

  active(key: string): number {
    return this.#active.get(key) ?? 0;
  }
}
