// The agent's own run-time stalls, always on and cheap: how late its event loop runs timers
// and how long V8's collections pause it, over a window an operator (or a benchmark) resets.
// Prometheus already has both from prom-client's default metrics (nodemesh_agent_nodejs_
// eventloop_lag_*, nodemesh_agent_nodejs_gc_duration_seconds), but its lag histogram restarts at
// every scrape and its GC buckets hide the longest pause, so neither measures one chosen run.
import { monitorEventLoopDelay, PerformanceObserver, constants, type ELDHistogram, type NodeGCPerformanceDetail } from 'node:perf_hooks';

export type GcKind = 'minor' | 'major' | 'incremental' | 'weakcb';

export interface GcPauses {
  count: number;
  totalMs: number;
  maxMs: number;
}

/** GET /debug/runtime: the window since the last reset. */
export interface RuntimeWindow {
  /** When the window began (ISO 8601), and how long it has run. */
  since: string;
  seconds: number;
  /**
   * How late the loop ran a timer due every `resolutionMs`, µs: the stall seen by anything
   * waiting on the loop (a socket's data, a reply). `samples` is the number of timer runs.
   */
  eventLoopDelay: { resolutionMs: number; samples: number; p50Us: number; p90Us: number; p99Us: number; maxUs: number; meanUs: number };
  gc: GcPauses & { byKind: Record<GcKind, GcPauses> };
}

const KINDS: Array<[number, GcKind]> = [
  [constants.NODE_PERFORMANCE_GC_MINOR, 'minor'],
  [constants.NODE_PERFORMANCE_GC_MINOR_MARK_SWEEP, 'minor'],
  [constants.NODE_PERFORMANCE_GC_MAJOR, 'major'],
  [constants.NODE_PERFORMANCE_GC_INCREMENTAL, 'incremental'],
  [constants.NODE_PERFORMANCE_GC_WEAKCB, 'weakcb'],
];

const pauses = (): GcPauses => ({ count: 0, totalMs: 0, maxMs: 0 });
const round = (x: number, n: number): number => Math.round(x * 10 ** n) / 10 ** n;

/**
 * Event-loop delay (a timer every `resolutionMs`, 10 by default) and GC pauses of this
 * process. The histogram records each timer interval, so the delay is that less the resolution.
 */
export class RuntimeMonitor {
  readonly resolutionMs: number;
  readonly #loop: ELDHistogram;
  readonly #gc: PerformanceObserver;
  #byKind = new Map<GcKind, GcPauses>();
  #since = Date.now();

  constructor(opts: { resolutionMs?: number } = {}) {
    this.resolutionMs = opts.resolutionMs ?? 10;
    this.#loop = monitorEventLoopDelay({ resolution: this.resolutionMs });
    this.#loop.enable();
    this.#gc = new PerformanceObserver((list) => {
      for (const e of list.getEntries()) {
        const kind = KINDS.find(([k]) => k === (e as { detail?: NodeGCPerformanceDetail }).detail?.kind)?.[1] ?? 'major';
        const p = this.#byKind.get(kind) ?? pauses();
        p.count++;
        p.totalMs += e.duration;
        p.maxMs = Math.max(p.maxMs, e.duration);
        this.#byKind.set(kind, p);
      }
    });
    this.#gc.observe({ entryTypes: ['gc'] });
  }

  snapshot(): RuntimeWindow {
    const h = this.#loop;
    const res = this.resolutionMs * 1e6;
    // Nanoseconds of interval to µs of delay; an empty histogram reads 0, not its sentinels.
    const us = (ns: number): number => (h.count === 0 ? 0 : round(Math.max(0, ns - res) / 1e3, 1));
    const byKind = Object.fromEntries(KINDS.map(([, k]) => [k, { ...pauses(), ...this.#byKind.get(k) }])) as Record<GcKind, GcPauses>;
    for (const p of Object.values(byKind)) {
      p.totalMs = round(p.totalMs, 3);
      p.maxMs = round(p.maxMs, 3);
    }
    const all = Object.values(byKind);
    return {
      since: new Date(this.#since).toISOString(),
      seconds: round((Date.now() - this.#since) / 1000, 3),
      eventLoopDelay: {
        resolutionMs: this.resolutionMs,
        samples: h.count,
        p50Us: us(h.percentile(50)),
        p90Us: us(h.percentile(90)),
        p99Us: us(h.percentile(99)),
        maxUs: us(h.max),
        meanUs: us(h.mean),
      },
      gc: {
        count: all.reduce((a, p) => a + p.count, 0),
        totalMs: round(all.reduce((a, p) => a + p.totalMs, 0), 3),
        maxMs: Math.max(...all.map((p) => p.maxMs)),
        byKind,
      },
    };
  }

  /** Starts a new window (the timer interval it falls in is not counted: a stall straddling it is lost). */
  reset(): void {
    this.#loop.reset();
    this.#byKind = new Map();
    this.#since = Date.now();
  }

  close(): void {
    this.#loop.disable();
    this.#gc.disconnect();
  }
}

let shared: RuntimeMonitor | undefined;

/** The process's monitor, started on first use: the loop and the heap are the process's. */
export function runtimeMonitor(): RuntimeMonitor {
  return (shared ??= new RuntimeMonitor());
}
