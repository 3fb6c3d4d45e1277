// The control-plane benchmark's scenario runner: starts the control plane (config directory or
// Kubernetes API), then rounds of N xDS client processes, and times each policy change from just
// before the write (a file, or an update through the API) until every client applied it.
import { closeSync, mkdtempSync, openSync, rmSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { TYPE_AUTHORIZATION } from '../xds/index.js';
import { Child, progress, sleep, type Stoppable } from './cp-child.js';
import type { BenchConfig } from './cp-config.js';
import { CP_ROLE, type CpReport } from './cp-server.js';
import type { CpSettings } from './cp-settings.js';
import { median } from './tools.js';
import { nowMs, readChars, type AgentReport, type MemoryReport, type ResponseSize } from './xds-agent.js';

export const DEFAULT_DEBOUNCE_MS = 100; // ConfigSource's default (src/controlplane/sources.ts)
export const DEFAULT_RESCAN_MS = 2000;
export const KUBE_DEBOUNCE_MS = 20; // KubeSource's default (src/controlplane/kube-source.ts)
const GAP_MS = 500;

type CpChild = Child<CpReport>;
type AgentChild = Child<AgentReport>;
export type CpReady = Extract<CpReport, { type: 'ready' }>;

export const max = (xs: number[]): number => (xs.length ? Math.max(...xs) : NaN);
export const min = (xs: number[]): number => (xs.length ? Math.min(...xs) : NaN);

export interface ChangeResult {
  seq: number;
  /** Per client: just before the write → the client's ProxyState holds the revision, ms. */
  latencies: number[];
  p50: number;
  max: number;
  /** The write itself: writeFile/rename returned, or the API answered the update. */
  writeMs: number;
  /** Write → the recompute that picked it up started (directory: the debounce or the periodic
   * rescan; Kubernetes: the watch event, the source's debounce and the snapshot fold). */
  toRescanMs: number;
  parseMs: number;
  /** Recompute start → every push queued (directory: parse too; translate 1,100 + 100 resources, hash, push). */
  rescanMs: number;
  cpuMs: number;
  pushes: number;
  /** Pushes queued → the last client applied. */
  deliverMs: number;
  /** Per client: encoded DeltaDiscoveryResponse bytes, and TLS bytes read (rchar). */
  bytes: number[];
  readBytes: number[];
  /** CPU of the stand-in API server over the change (Kubernetes source), ms; NaN otherwise. */
  apiCpuMs: number;
}

export interface Round {
  n: number;
  spawnToReady: number[];
  /** Process boot: spawn → XdsClient.start(). */
  spawnToStart: number[];
  startToReady: number[];
  /** The first client spawned → the first client synced. */
  firstSyncedMs: number;
  sync: ResponseSize[];
  syncBytes: number[];
  syncReadBytes: number[];
  stateHeap: number[];
  rssBeforeStart: number[];
  /** Control plane CPU from the first spawn until every client was synced. */
  cpSyncCpuMs: number;
  /** The stand-in API server's CPU over the same span, and the requests it served; NaN / none without one. */
  apiSyncCpuMs: number;
  apiSyncRequests?: ApiRequests;
  agentMem: MemoryReport[];
  changes: ChangeResult[];
  renames: ChangeResult[];
  cpWithClients?: MemoryReport & { streams: number };
}

export interface CpRun {
  source: 'dir' | 'kube';
  debounceMs: number;
  /** Control-plane process spawn → serving. */
  startupMs: number;
  /** Spawn → ControlPlane.start() called (Node and the modules loading). */
  bootMs: number;
  /** ControlPlane.start() called → serving. */
  startToServeMs: number;
  /** ControlPlane.start() called → every informer listed once (Kubernetes source); NaN otherwise. */
  startToSyncedMs: number;
  addresses: number;
  authorizations: number;
  idle: MemoryReport & { streams: number };
  rounds: Round[];
  /** The machine's 1-minute load average when the run started (other work shares it). */
  loadAvg: number;
}

/** Commits probe revision `seq`, after any untimed preparation (reading the object's resourceVersion). */
export type ProbeWrite = (seq: number) => Promise<() => unknown>;

/** Client `i`'s node name and token file. */
export interface Credential {
  node: string;
  token: string;
}

export interface RoundPlan {
  n: number;
  credential: (i: number) => Credential;
  /** The probe policy's key (namespace/name) and how a revision is written. */
  probe: { key: string; write: ProbeWrite; how: string };
  /** A second series of changes written another way (directory: by rename). */
  alt?: { key: string; write: ProbeWrite; how: string };
  cpMemory: boolean;
  /** The stand-in API server, whose cost is reported beside the control plane's. */
  api?: ApiProbe;
}

/** What the benchmark can ask the stand-in API server. */
export interface ApiProbe {
  /** CPU ms so far. */
  cpuMs(): Promise<number>;
  /** Requests served so far and what those from index `from` on were; connections accepted so far. */
  requests(from: number): Promise<{ total: number; connections: number; kinds: RequestKinds }>;
}

export interface RequestKinds {
  tokenReviews: number;
  nodeReads: number;
  other: number;
}

/** What the stand-in served over a span: requests by kind, and the TCP (TLS) connections it accepted. */
export type ApiRequests = RequestKinds & { connections: number };

export class Bench {
  readonly root = mkdtempSync(join(tmpdir(), 'nm-bench-cp-'));
  readonly configDir = join(this.root, 'config');
  readonly children = new Set<Stoppable>();
  /** The control plane runs as bench/controlplane.js itself, with `--role control-plane`. */
  readonly #cpModule = fileURLToPath(new URL('./controlplane.js', import.meta.url));
  readonly #agentModule = fileURLToPath(new URL('./xds-agent.js', import.meta.url));
  readonly #fds: number[] = [];
  #seq = 0;
  config!: BenchConfig;

  constructor(readonly settings: CpSettings) {}

  log(name: string): { fd: number; file: string } {
    const file = join(this.root, `${name}.log`);
    const fd = openSync(file, 'a');
    this.#fds.push(fd);
    return { fd, file };
  }

  /** Starts the control plane on `source` (`--config <dir>` or `--kubeconfig <file>`). */
  async startControlPlane(tag: string, source: string[], debounceMs?: number): Promise<{ cp: CpChild; ready: CpReady }> {
    const log = this.log(`control-plane-${tag}`);
    const args = ['--role', CP_ROLE, ...source, '--state-dir', join(this.root, `state-${tag}`), ...(debounceMs === undefined ? [] : ['--debounce-ms', String(debounceMs)])];
    const cp: CpChild = new Child('control plane', this.#cpModule, args, log.fd, log.file);
    this.children.add(cp);
    const ready = await cp.take((m): m is CpReady => m.type === 'ready', 'the control plane to start', 90_000);
    if (ready.errors.length > 0) throw new Error(`the generated config has errors:\n${ready.errors.join('\n')}`);
    return { cp, ready };
  }

  async cpCpuMs(cp: CpChild): Promise<number> {
    cp.send({ type: 'cpu' });
    return (await cp.take((m): m is Extract<CpReport, { type: 'cpu' }> => m.type === 'cpu', 'a CPU report', 10_000)).cpuMs;
  }

  async cpMemory(cp: CpChild): Promise<MemoryReport & { streams: number }> {
    cp.send({ type: 'mem' });
    return cp.take((m): m is MemoryReport & { streams: number } => m.type === 'mem', 'a memory report', 10_000);
  }

  async change(cp: CpChild, agents: AgentChild[], probe: RoundPlan['probe'], api?: ApiProbe): Promise<ChangeResult> {
    const seq = ++this.#seq;
    const commit = await probe.write(seq);
    const read0 = agents.map((a) => readChars(a.pid));
    const api0 = (await api?.cpuMs()) ?? NaN;
    const t0 = nowMs();
    await commit();
    const writeMs = nowMs() - t0;
    const timeout = 15_000;
    type Applied = Extract<AgentReport, { type: 'applied' }>;
    const applied = await Promise.all(
      agents.map((a) => a.take((m): m is Applied => m.type === 'applied' && m.key === probe.key && m.seq === seq, `revision ${seq} of ${probe.key}`, timeout)),
    );
    const readBytes = agents.map((a, i) => readChars(a.pid) - read0[i]!);
    // The recompute that changed something and ended after the write began: a periodic rescan
    // already running at t0 may read the new file, so it can have started a little before.
    const rescan = await cp.take(
      (m): m is Extract<CpReport, { type: 'rescan' }> => m.type === 'rescan' && m.doneMs >= t0,
      `the recompute of revision ${seq}`,
      timeout,
    );
    const latencies = applied.map((a) => a.atMs - t0);
    const r: ChangeResult = {
      seq,
      latencies,
      p50: median(latencies),
      max: max(latencies),
      writeMs,
      toRescanMs: rescan.startMs - t0,
      parseMs: rescan.parsedMs - rescan.startMs,
      rescanMs: rescan.doneMs - rescan.startMs,
      cpuMs: rescan.cpuMs,
      pushes: rescan.pushes,
      deliverMs: max(applied.map((a) => a.atMs)) - rescan.doneMs,
      bytes: applied.map((a) => a.response.bytes),
      readBytes,
      apiCpuMs: NaN,
    };
    if (applied.some((a) => a.response.typeUrl !== TYPE_AUTHORIZATION || a.response.resources !== 1)) {
      progress(`warning: revision ${seq} came in a response of ${applied[0]!.response.resources} resources`);
    }
    progress(`  ${probe.how} revision ${seq}: p50 ${r.p50.toFixed(0)} ms, max ${r.max.toFixed(0)} ms (write ${r.writeMs.toFixed(0)}, write→recompute ${r.toRescanMs.toFixed(0)}, recompute ${r.rescanMs.toFixed(0)}, deliver ${r.deliverMs.toFixed(0)})`);
    await sleep(GAP_MS);
    // After the gap: the status write-back that follows the push is in it too.
    r.apiCpuMs = ((await api?.cpuMs()) ?? NaN) - api0;
    return r;
  }

  async round(cp: CpChild, ready: CpReady, tag: string, plan: RoundPlan): Promise<Round> {
    const { n } = plan;
    progress(`${tag}: starting ${n} xDS client process(es)`);
    const log = this.log(`agents-${tag}-${n}`);
    const agents: AgentChild[] = [];
    const cpu0 = await this.cpCpuMs(cp);
    const api0 = (await plan.api?.cpuMs()) ?? NaN;
    const before = await plan.api?.requests(Infinity);
    try {
      for (let i = 0; i < n; i++) {
        const { node, token } = plan.credential(i);
        const a: AgentChild = new Child(`xds client ${node}`, this.#agentModule, ['--address', ready.address, '--root-cert', ready.rootCert, '--token', token, '--node', node], log.fd, log.file);
        this.children.add(a);
        agents.push(a);
      }
      type Ready = Extract<AgentReport, { type: 'ready' }>;
      const readies = await Promise.all(agents.map((a) => a.take((m): m is Ready => m.type === 'ready', 'the initial sync', 30_000 + 1000 * n)));
      const cpSyncCpuMs = (await this.cpCpuMs(cp)) - cpu0;
      const apiSyncCpuMs = ((await plan.api?.cpuMs()) ?? NaN) - api0;
      const apiSync = before && (await plan.api?.requests(before.total));
      const spawnToReady = readies.map((r, i) => r.readyMs - agents[i]!.spawnedMs);
      progress(`${tag}: ${n} synced; spawn → ready p50 ${median(spawnToReady).toFixed(0)} ms, max ${max(spawnToReady).toFixed(0)} ms`);
      await sleep(GAP_MS);
      for (const a of agents) a.send({ type: 'mem' });
      const agentMem = await Promise.all(agents.map((a) => a.take((m): m is MemoryReport => m.type === 'mem', 'a memory report', 10_000)));
      const changes: ChangeResult[] = [];
      for (let i = 0; i < this.settings.changes; i++) changes.push(await this.change(cp, agents, plan.probe, plan.api));
      const cpWithClients = plan.cpMemory ? await this.cpMemory(cp) : undefined;
      const renames: ChangeResult[] = [];
      if (plan.alt) {
        progress(`${tag}: ${n} clients, ${plan.alt.how}`);
        for (let i = 0; i < this.settings.changes; i++) renames.push(await this.change(cp, agents, plan.alt, plan.api));
      }
      return {
        n,
        spawnToReady,
        spawnToStart: readies.map((r, i) => r.startMs - agents[i]!.spawnedMs),
        startToReady: readies.map((r) => r.readyMs - r.startMs),
        firstSyncedMs: min(readies.map((r) => r.readyMs)) - agents[0]!.spawnedMs,
        sync: readies[0]!.sync,
        syncBytes: readies.map((r) => r.sync.reduce((s, x) => s + x.bytes, 0)),
        syncReadBytes: readies.map((r) => r.syncReadBytes),
        stateHeap: readies.map((r) => r.heapAfterSync - r.heapBeforeStart),
        rssBeforeStart: readies.map((r) => r.rssBeforeStart),
        cpSyncCpuMs,
        apiSyncCpuMs,
        ...(before && apiSync ? { apiSyncRequests: { ...apiSync.kinds, connections: apiSync.connections - before.connections } } : {}),
        agentMem,
        changes,
        renames,
        ...(cpWithClients ? { cpWithClients } : {}),
      };
    } finally {
      await Promise.all(agents.map((a) => a.stop()));
      for (const a of agents) this.children.delete(a);
    }
  }

  /**
   * One control plane on `source`, its idle memory (after `settle`, when the source has more to
   * do after start, e.g. status writes), then one round per plan.
   */
  async run(tag: string, o: { source: string[]; kind: 'dir' | 'kube'; debounceMs?: number; plans: (ready: CpReady) => RoundPlan[]; settle?: () => Promise<void> }): Promise<CpRun> {
    const defaultDebounce = o.kind === 'dir' ? DEFAULT_DEBOUNCE_MS : KUBE_DEBOUNCE_MS;
    progress(`${tag}: control plane on the ${o.kind === 'dir' ? 'config directory' : 'Kubernetes API'} (debounce ${o.debounceMs ?? `${defaultDebounce} ms, the default`})`);
    const load = loadavg()[0]!;
    const { cp, ready } = await this.startControlPlane(tag, o.source, o.debounceMs);
    try {
      const synced = ready.syncedMs === undefined ? '' : `, informers synced ${(ready.syncedMs - ready.startMs).toFixed(0)} ms after start()`;
      progress(`${tag}: serving ${ready.addresses} addresses and ${ready.authorizations} authorizations on ${ready.address} after ${(ready.readyMs - cp.spawnedMs).toFixed(0)} ms${synced}`);
      await o.settle?.();
      await sleep(1000);
      const idle = await this.cpMemory(cp);
      const rounds: Round[] = [];
      for (const plan of o.plans(ready)) rounds.push(await this.round(cp, ready, tag, plan));
      return {
        source: o.kind,
        debounceMs: o.debounceMs ?? defaultDebounce,
        startupMs: ready.readyMs - cp.spawnedMs,
        bootMs: ready.startMs - cp.spawnedMs,
        startToServeMs: ready.readyMs - ready.startMs,
        startToSyncedMs: ready.syncedMs === undefined ? NaN : ready.syncedMs - ready.startMs,
        addresses: ready.addresses,
        authorizations: ready.authorizations,
        idle,
        rounds,
        loadAvg: load,
      };
    } finally {
      await cp.stop();
      this.children.delete(cp);
    }
  }

  /** Stops every child still running (by PID), closes the logs, removes the temp dir. */
  async cleanup(keepLogs: boolean): Promise<void> {
    await Promise.all([...this.children].map((c) => c.stop()));
    for (const fd of this.#fds.splice(0)) closeSync(fd);
    if (!keepLogs) rmSync(this.root, { recursive: true, force: true });
  }

  /** The last resort (watchdog, signals): SIGKILL every child now. */
  killAll(): void {
    for (const c of this.children) if (c.running) c.proc.kill('SIGKILL');
  }
}
