// The agents' event-loop delay and GC pauses during one measurement (GET /debug/runtime on each
// node's admin port, inside its netns): a window reset before the load and read after it, so
// a benchmark can say whether the proxies' stalls explain its tail latencies.
import { spawnSync } from 'node:child_process';
import { multiNodeNodes } from '../cluster/index.js';
import { PORTS } from '../net/index.js';
import { nsenter } from '../sim/index.js';
import type { RuntimeWindow } from '../telemetry/index.js';

/** One measurement's stalls over the proxies of a path: the worst proxy's delay, GC summed. */
export interface PathRuntime {
  loopP50Us: number;
  loopP99Us: number;
  loopMaxUs: number;
  gcCount: number;
  gcTotalMs: number;
  gcMaxMs: number;
  majorGcs: number;
}

export const NO_RUNTIME: PathRuntime = { loopP50Us: NaN, loopP99Us: NaN, loopMaxUs: NaN, gcCount: NaN, gcTotalMs: NaN, gcMaxMs: NaN, majorGcs: NaN };

export class RuntimeProbe {
  readonly #netns = new Map<string, string>();

  constructor(sd: string) {
    for (const n of multiNodeNodes(sd)) if (n.netnsPath) this.#netns.set(n.name, n.netnsPath);
  }

  #get(node: string, reset: boolean): RuntimeWindow {
    const ns = this.#netns.get(node);
    if (!ns) throw new Error(`no netns for node ${node}`);
    const url = `http://127.0.0.1:${PORTS.admin}/debug/runtime${reset ? '?reset=1' : ''}`;
    const r = spawnSync(nsenter(), [`--net=${ns}`, '--', 'curl', '-sS', '-f', '-m', '5', url], { encoding: 'utf8', timeout: 10_000 });
    if (r.status !== 0) throw new Error(`GET ${url} on ${node}: curl exited ${r.status}: ${r.stderr}`);
    return JSON.parse(r.stdout) as RuntimeWindow;
  }

  /** Starts a new window on each node's agent. */
  reset(nodes: string[]): void {
    for (const n of nodes) this.#get(n, true);
  }

  /** The windows since reset(), combined over `nodes`; NO_RUNTIME when the path has no proxy. */
  read(nodes: string[]): PathRuntime {
    if (nodes.length === 0) return NO_RUNTIME;
    const ws = nodes.map((n) => this.#get(n, false));
    const max = (fn: (w: RuntimeWindow) => number) => Math.max(...ws.map(fn));
    const sum = (fn: (w: RuntimeWindow) => number) => ws.reduce((a, w) => a + fn(w), 0);
    return {
      loopP50Us: max((w) => w.eventLoopDelay.p50Us),
      loopP99Us: max((w) => w.eventLoopDelay.p99Us),
      loopMaxUs: max((w) => w.eventLoopDelay.maxUs),
      gcCount: sum((w) => w.gc.count),
      gcTotalMs: sum((w) => w.gc.totalMs),
      gcMaxMs: max((w) => w.gc.maxMs),
      majorGcs: sum((w) => w.gc.byKind.major.count),
    };
  }
}
