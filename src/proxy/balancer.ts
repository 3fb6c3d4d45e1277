// Picks a Service endpoint for each new connection: round robin, or least connections
// (fewest connections this node has open to it, ties broken round robin).

export type LbPolicy = 'round-robin' | 'least-conn';

/** Slots of a shared cursor table (newCursors): services share a slot only when their names hash alike. */
export const CURSOR_SLOTS = 1024;

/**
 * Round-robin cursors in shared memory, for the balancers of every proxy of a node (the proxy
 * workers): each pick advances its service's slot atomically, so the node as a whole goes round
 * the endpoints, not each proxy on its own.
 */
export function newCursors(): Uint32Array {
  return new Uint32Array(new SharedArrayBuffer(4 * CURSOR_SLOTS));
}

/** FNV-1a of a service key, to a slot. */
function slotOf(key: string, slots: number): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < key.length; i++) h = Math.imul(h ^ key.charCodeAt(i), 0x01000193);
  return (h >>> 0) % slots;
}

export class Balancer {
  readonly policy: LbPolicy;
  readonly #cursor = new Map<string, number>();
  readonly #active = new Map<string, number>();
  readonly #shared: Uint32Array | undefined;

  /** `shared` (newCursors): the cursors every proxy of the node shares; absent, this balancer's own. */
  constructor(policy: LbPolicy = 'round-robin', shared?: Uint32Array) {
    this.policy = policy;
    this.#shared = shared;
  }

  /** Chooses among `endpoints` (keys) of `service`; returns the index and a release function. */
  pick(service: string, endpoints: readonly string[]): { index: number; release: () => void } | undefined {
    if (endpoints.length === 0) return undefined;
    const shared = this.#shared;
    const start = shared ? Atomics.add(shared, slotOf(service, shared.length), 1) : (this.#cursor.get(service) ?? 0);
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
