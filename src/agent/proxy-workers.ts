// The node proxy over every core (docs/architecture.md "Proxy workers"): the main thread's
// NodeProxy and N-1 worker threads (proxy-worker.ts), each with its own listening sockets in
// every pod's SO_REUSEPORT groups. The kernel spreads new connections over them by 4-tuple
// hash, on the outbound listener (127.0.0.1:15001) as on the inbound ones sk_lookup steers to
// (it selects the main thread's socket, then the kernel picks within its group). ProxyGroup is
// what the agent drives: pods added to and removed from every proxy, policy re-evaluated in
// every one, drains and closes for all, and the workers' metrics, flows and capture joined to
// the main thread's.
import { availableParallelism } from 'node:os';
import { readFileSync } from 'node:fs';
import { Worker } from 'node:worker_threads';
import { AggregatorRegistry } from 'prom-client';
import type { Logger } from '../log.js';
import type { HboneSessionInfo, LocalPod, NodeProxy, WorkloadCredentials } from '../proxy/index.js';
import type { FlowLog, FlowRecord, MeshMetrics } from '../telemetry/index.js';
import type { CaptureHub, CaptureRecorder } from '../capture/index.js';
import { changeOps, fullOps } from './state-mirror.js';
import type { FromWorker, Metrics, ToWorker, WorkerCall, WorkerInit, WorkerStatus } from './worker-protocol.js';
import type { KnownPod } from './workloads.js';
import type { ProxyState } from '../state/index.js';

/**
 * The proxies to run by default (`--workers auto`): the CPUs this process may use, at most 8.
 * That is the CPU count, or less when a cgroup v2 `cpu.max` quota on the agent's own cgroup or
 * any parent of it says so (a container's CPU limit: the agent mounts the host's cgroupfs, so
 * its own cgroup is found through /proc/self/cgroup, not at the mount's root).
 */
export function defaultWorkers(read: (f: string) => string = (f) => readFileSync(f, 'utf8'), cpus = availableParallelism()): number {
  let n = cpus;
  let path = '/';
  try {
    path = /^0::(.*)$/m.exec(read('/proc/self/cgroup'))?.[1] ?? '/';
  } catch {
    /* no cgroup v2: the CPU count */
  }
  const parts = path.split('/').filter(Boolean);
  for (let i = parts.length; i >= 0; i--) {
    try {
      const [quota, period] = read(`/sys/fs/cgroup/${parts.slice(0, i).map((p) => `${p}/`).join('')}cpu.max`).trim().split(/\s+/);
      if (quota && quota !== 'max' && Number(period) > 0) n = Math.min(n, Math.max(1, Math.ceil(Number(quota) / Number(period))));
    } catch {
      /* no cpu.max at this level (the root has none) */
    }
  }
  return Math.min(8, Math.max(1, n));
}

/** What the agent drives: the main thread's proxy's surface, over every proxy. */
export interface ProxyDriver {
  addPod(pod: LocalPod): Promise<void>;
  removePod(uid: string, why?: string): Promise<void>;
  reevaluate(): number;
  stopAccepting(): void;
  openConnections(): number;
  inboundListeners(): ReturnType<NodeProxy['inboundListeners']>;
  listeners(): ReturnType<NodeProxy['listeners']>;
  hboneSessions(): HboneSessionInfo[];
  drain(ms: number, signal: AbortSignal, onOpen?: (open: number) => void): Promise<number>;
  close(why?: string): Promise<void>;
}

export interface ProxyGroupOptions {
  main: NodeProxy;
  /** Proxies in all, the main thread's included (1: no workers). */
  count: number;
  init: Omit<WorkerInit, 'index' | 'count' | 'flowIds' | 'capture'>;
  log: Logger;
  flows: FlowLog;
  /** Control-plane mode: the state the workers mirror, and whether it is served. */
  state?: { state: ProxyState; serving: () => boolean };
  /** Local mode: the pods the workers know by IP. */
  localPods?: { all(): KnownPod[] };
  credentials?: WorkloadCredentials;
  capture?: { hub: CaptureHub; recorder: CaptureRecorder };
  /** The worker script (default: proxy-worker.js beside this file). */
  script?: URL;
}

interface Handle {
  index: number;
  worker: Worker;
  ready: Promise<void>;
  calls: Map<number, { resolve(v: unknown): void; reject(e: Error): void }>;
  status: WorkerStatus;
  /** Taps of this worker's connections the main thread's hub took. */
  taps: Map<number, ReturnType<CaptureHub['openTap']>>;
  exited: boolean;
  startedAt: number;
}

const EMPTY_STATUS: WorkerStatus = { open: 0, listeners: [], hbone: [], openFlows: [] };

export class ProxyGroup implements ProxyDriver {
  readonly #o: ProxyGroupOptions;
  readonly #main: NodeProxy;
  readonly #log: Logger;
  #workers: Handle[] = [];
  #nextCall = 1;
  /** Pods every proxy serves, in order: a worker that is (re)started gets them all. */
  readonly #pods = new Map<string, LocalPod>();
  #closing = false;
  #accepting = true;
  #restarts = 0;
  /** Deaths in a row of workers that ran less than a minute: the replacement waits 1 s, doubling to 30 s. */
  #quickDeaths = 0;
  readonly #offs: (() => void)[] = [];
  /** The node-wide flow id counter, shared with every worker. */
  readonly #flowIds = new BigInt64Array(new SharedArrayBuffer(8));

  constructor(o: ProxyGroupOptions) {
    this.#o = o;
    this.#main = o.main;
    this.#log = o.log.child({ component: 'proxy-workers' });
    if (o.count > 1) o.flows.shareIds(this.#flowIds, 0);
    for (let i = 1; i < o.count; i++) this.#workers.push(this.#spawn(i));
    if (o.state) {
      const { state, serving } = o.state;
      const onChange = (c: Parameters<typeof changeOps>[1]): void => this.#broadcast({ t: 'state', ops: changeOps(state, c), serving: serving() });
      state.on('change', onChange);
      this.#offs.push(() => state.off('change', onChange));
    }
    if (o.capture) {
      const off = o.capture.hub.onActive((active) => this.#broadcast({ t: 'capture', active }));
      this.#offs.push(off);
    }
  }

  /** Proxies running (the main thread's included). */
  get count(): number {
    return 1 + this.#workers.length;
  }

  /** Workers that died and were replaced since the start (also in /config_dump). */
  get restarts(): number {
    return this.#restarts;
  }

  /** Waits until every worker has started (and has its state). */
  async started(): Promise<void> {
    await Promise.all(this.#workers.map((w) => w.ready));
  }

  #spawn(index: number): Handle {
    const o = this.#o;
    const init: WorkerInit = { ...o.init, index, count: o.count, flowIds: this.#flowIds, capture: o.capture !== undefined };
    const worker = new Worker(o.script ?? new URL('./proxy-worker.js', import.meta.url), { workerData: init, stdout: false, stderr: false });
    let ready!: () => void;
    const h: Handle = { index, worker, ready: new Promise<void>((r) => (ready = r)), calls: new Map(), status: EMPTY_STATUS, taps: new Map(), exited: false, startedAt: performance.now() };
    worker.on('message', (m: FromWorker) => this.#onMessage(h, m, ready));
    worker.on('error', (err) => this.#log.error({ err, worker: index }, 'proxy worker failed; its connections are reset, the other proxies keep theirs'));
    worker.on('exit', (code) => this.#onExit(h, code));
    // The state it decides on, before any pod: a worker never serves a pod without policy.
    if (o.state) this.#post(h, { t: 'state', ops: fullOps(o.state.state), serving: o.state.serving() });
    if (o.localPods) this.#post(h, { t: 'local', pods: o.localPods.all() });
    if (o.capture?.hub.active) this.#post(h, { t: 'capture', active: true });
    return h;
  }

  #onExit(h: Handle, code: number): void {
    h.exited = true;
    for (const c of h.calls.values()) c.reject(new Error(`proxy worker ${h.index} exited (code ${code})`));
    h.calls.clear();
    for (const t of h.taps.values()) t?.close();
    h.taps.clear();
    if (this.#closing) return;
    this.#restarts++;
    this.#quickDeaths = performance.now() - h.startedAt < 60_000 ? this.#quickDeaths + 1 : 1;
    const delayMs = Math.min(30_000, 1000 * 2 ** (this.#quickDeaths - 1));
    // A worker that died is replaced: its sockets closed with it (the kernel took them out of
    // the pods' groups), so the other proxies took its share until the new one is serving.
    this.#log.error({ worker: h.index, code, restartInMs: delayMs }, 'proxy worker exited; starting another in its place');
    const t = setTimeout(() => {
      if (this.#closing) return;
      const next = this.#spawn(h.index);
      this.#workers = this.#workers.map((w) => (w === h ? next : w));
      void this.#catchUp(next);
    }, delayMs);
    t.unref();
  }

  /** Gives a (re)started worker every pod, and stops its accepting when a drain began. */
  async #catchUp(h: Handle): Promise<void> {
    await h.ready;
    for (const pod of this.#pods.values()) await this.#call(h, { fn: 'addPod', pod }).catch((err: unknown) => this.#log.warn({ err, worker: h.index, pod: `${pod.namespace}/${pod.name}` }, 'a restarted proxy worker could not open a pod\'s listeners; the other proxies serve it'));
    if (!this.#accepting) await this.#call(h, { fn: 'stopAccepting' }).catch(() => {});
  }

  #onMessage(h: Handle, m: FromWorker, ready: () => void): void {
    switch (m.t) {
      case 'ready':
        return ready();
      case 'reply': {
        const c = h.calls.get(m.id);
        h.calls.delete(m.id);
        if (!c) return;
        if (m.error) c.reject(Object.assign(new Error(m.error.message), m.error.code ? { code: m.error.code } : {}));
        else c.resolve(m.value);
        return;
      }
      case 'status':
        h.status = m.status;
        return;
      case 'flows':
        for (const r of m.records) this.#o.flows.ingest(r);
        return;
      case 'creds': {
        const c = this.#o.credentials;
        if (!c) return this.#post(h, { t: 'creds', id: m.id, error: 'this agent has no certificates (local mode)' });
        c.get(m.identity).then(
          (creds) => this.#post(h, { t: 'creds', id: m.id, creds }),
          (err: unknown) => this.#post(h, { t: 'creds', id: m.id, error: err instanceof Error ? err.message : String(err) }),
        );
        return;
      }
      case 'tap': {
        const sink = this.#o.capture?.hub.openTap(m.open as Parameters<CaptureHub['openTap']>[0]);
        if (sink) h.taps.set(m.cid, sink);
        else this.#post(h, { t: 'untap', cid: m.cid });
        return;
      }
      case 'tapData':
        h.taps.get(m.cid)?.data(m.dir, Buffer.from(m.chunk.buffer, m.chunk.byteOffset, m.chunk.byteLength));
        return;
      case 'tapEnd':
        h.taps.get(m.cid)?.end(m.dir);
        return;
      case 'tapClose':
        h.taps.get(m.cid)?.close();
        h.taps.delete(m.cid);
        return;
      case 'requests':
        for (const r of m.records) this.#o.capture?.recorder.request(r.view as Parameters<CaptureRecorder['request']>[0], r.facts as Parameters<CaptureRecorder['request']>[1], r.both);
        return;
    }
  }

  #post(h: Handle, m: ToWorker): void {
    if (!h.exited) h.worker.postMessage(m);
  }

  #broadcast(m: ToWorker): void {
    for (const h of this.#workers) this.#post(h, m);
  }

  #call(h: Handle, call: WorkerCall): Promise<unknown> {
    if (h.exited) return Promise.reject(new Error(`proxy worker ${h.index} is not running`));
    const id = this.#nextCall++;
    return new Promise((resolve, reject) => {
      h.calls.set(id, { resolve, reject });
      this.#post(h, { t: 'call', id, call });
    });
  }

  /** Calls every worker; failures are logged (the main thread's proxy serves what a worker cannot). */
  async #each(call: WorkerCall, what: string): Promise<unknown[]> {
    const out = await Promise.allSettled(this.#workers.map(async (h) => {
      await h.ready;
      return this.#call(h, call);
    }));
    return out.map((r, i) => {
      if (r.status === 'fulfilled') return r.value;
      this.#log.warn({ err: r.reason, worker: this.#workers[i]?.index }, `proxy worker: ${what} failed`);
      return undefined;
    });
  }

  /** The state became served (the first xDS sync) without a change batch: workers learn it too. */
  servingChanged(): void {
    if (this.#o.state) this.#broadcast({ t: 'state', ops: [], serving: this.#o.state.serving() });
  }

  /** Local mode: the pods by IP changed. */
  localPodsChanged(): void {
    if (this.#o.localPods) this.#broadcast({ t: 'local', pods: this.#o.localPods.all() });
  }

  async addPod(pod: LocalPod): Promise<void> {
    // The main thread's first: its inbound socket is the one sk_lookup selects; a pod it
    // cannot serve is served by none (the enroller retries).
    await this.#main.addPod(pod);
    this.#pods.set(pod.uid, pod);
    await this.#each({ fn: 'addPod', pod }, `opening ${pod.namespace}/${pod.name}'s listeners`);
  }

  async removePod(uid: string, why?: string): Promise<void> {
    this.#pods.delete(uid);
    await Promise.all([this.#main.removePod(uid, why), this.#each({ fn: 'removePod', uid, ...(why ? { why } : {}) }, 'closing a pod\'s listeners')]);
  }

  reevaluate(): number {
    void this.#each({ fn: 'reevaluate' }, 're-evaluating open connections').then((n) => {
      const closed = n.reduce((a: number, b) => a + (typeof b === 'number' ? b : 0), 0);
      if (closed) this.#log.info({ closed }, 'proxy workers closed connections denied by the new policy');
    });
    return this.#main.reevaluate();
  }

  stopAccepting(): void {
    this.#accepting = false;
    this.#main.stopAccepting();
    void this.#each({ fn: 'stopAccepting' }, 'closing listeners');
  }

  openConnections(): number {
    return this.#main.openConnections() + this.#workers.reduce((n, h) => n + (h.exited ? 0 : h.status.open), 0);
  }

  inboundListeners(): ReturnType<NodeProxy['inboundListeners']> {
    return this.#main.inboundListeners();
  }

  listeners(): ReturnType<NodeProxy['listeners']> {
    return this.#main.listeners();
  }

  /** Every proxy's listeners, for /config_dump. */
  workerListeners(): { worker: number; listeners: WorkerStatus['listeners'] }[] {
    return this.#workers.map((h) => ({ worker: h.index, listeners: h.status.listeners }));
  }

  hboneSessions(): HboneSessionInfo[] {
    return [...this.#main.hboneSessions(), ...this.#workers.flatMap((h) => h.status.hbone)];
  }

  /** Open connections' records of the workers (at most 256 each, as of their last second). */
  workerOpenFlows(): FlowRecord[] {
    return this.#workers.flatMap((h) => h.status.openFlows);
  }

  /**
   * The node's flow records as one proxy's: the main thread's ring (which holds the workers'
   * finished records too) and the workers' open ones, asked now; oldest first, the last `limit`.
   */
  async recentFlows(limit: number): Promise<FlowRecord[]> {
    if (this.#workers.length === 0) return this.#o.flows.recent(limit);
    const open = (await this.#each({ fn: 'openFlows' }, 'listing open connections')).flatMap((r) => (Array.isArray(r) ? (r as FlowRecord[]) : []));
    const ring = this.#o.flows.recent(limit);
    const finished = new Set(ring.map((r) => r.id));
    const all = [...ring, ...open.filter((r) => !finished.has(r.id))];
    all.sort((a, b) => a.id - b.id);
    return all.slice(-limit);
  }

  async drain(ms: number, signal: AbortSignal, onOpen?: (open: number) => void): Promise<number> {
    this.#accepting = false;
    const end = (): void => this.#broadcast({ t: 'endDrain' });
    signal.addEventListener('abort', end, { once: true });
    const open = this.openConnections();
    let told = false;
    const main = this.#main.drain(ms, signal, () => {
      told = true;
      onOpen?.(open);
    });
    const workers = this.#each({ fn: 'drain', ms }, 'draining');
    if (!told && open > 0) onOpen?.(open);
    const [left, wl] = await Promise.all([main, workers]);
    signal.removeEventListener('abort', end);
    return left + wl.reduce((a: number, b) => a + (typeof b === 'number' ? b : 0), 0);
  }

  async close(why?: string): Promise<void> {
    await Promise.all([this.#main.close(why), this.stop(why)]);
  }

  /**
   * Ends the workers: each closes its proxy (resetting what is still open, after a drain
   * nothing), writes out its last flow records and access log lines, and its thread ends;
   * one that does not answer within 5 s is terminated.
   */
  async stop(why?: string): Promise<void> {
    if (this.#closing) return;
    this.#closing = true;
    for (const off of this.#offs) off();
    const closed = this.#each({ fn: 'close', ...(why ? { why } : {}) }, 'closing');
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([closed, new Promise((r) => (timer = setTimeout(r, 5000)))]);
    clearTimeout(timer);
    await Promise.all(this.#workers.map((h) => (h.exited ? undefined : h.worker.terminate())));
  }

  /** The workers' metrics with the main thread's, summed by series, for a scrape. */
  async metrics(main: MeshMetrics): Promise<{ contentType: string; body: string }> {
    if (this.#workers.length === 0) return main.render();
    const all = [await main.json()] as Metrics[];
    const got = await this.#each({ fn: 'metrics' }, 'reading metrics');
    for (const m of got) if (Array.isArray(m)) all.push(m as Metrics);
    const agg = AggregatorRegistry.aggregate(all);
    return { contentType: main.registry.contentType, body: await agg.metrics() };
  }
}
