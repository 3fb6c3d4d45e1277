// The control-plane benchmark's scenario runner: starts the control plane, then rounds of N
// xDS client processes, and times each policy change from the file write to every client.
import { closeSync, mkdtempSync, openSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { mintNodeToken, readNodeSecret } from '../controlplane/index.js';
import { TYPE_AUTHORIZATION } from '../xds/index.js';
import { Child, progress, sleep, type Stoppable } from './cp-child.js';
import { probePolicy, type BenchConfig } from './cp-config.js';
import { CP_ROLE, type CpReport } from './cp-server.js';
import { median } from './tools.js';
import { nowMs, readChars, type AgentReport, type MemoryReport, type ResponseSize } from './xds-agent.js';

const ENV = process.env;
export const CLIENTS = (ENV.NODEMESH_BENCH_CP_CLIENTS ?? '1,10,50').split(',').map(Number);
export const CHANGES = Number(ENV.NODEMESH_BENCH_CP_CHANGES ?? 5);
/** A second run at the largest N with this debounce, to show what the default adds ('' skips it). */
export const COMPARE_DEBOUNCE = ENV.NODEMESH_BENCH_CP_COMPARE_DEBOUNCE_MS ?? '10';
export const DEFAULT_DEBOUNCE_MS = 100; // ConfigSource's default (src/controlplane/sources.ts)
export const DEFAULT_RESCAN_MS = 2000;
export const DEADLINE_MS = Number(ENV.NODEMESH_BENCH_CP_DEADLINE_S ?? 360) * 1000;
const GAP_MS = 500;

type CpChild = Child<CpReport>;
type AgentChild = Child<AgentReport>;

export const max = (xs: number[]): number => (xs.length ? Math.max(...xs) : NaN);
export const min = (xs: number[]): number => (xs.length ? Math.min(...xs) : NaN);

export interface ChangeResult {
  seq: number;
  /** Per client: file write → the client's ProxyState holds the revision, ms. */
  latencies: number[];
  p50: number;
  max: number;
  /** Write → the rescan that picked it up started (the debounce, or the periodic rescan). */
  toRescanMs: number;
  parseMs: number;
  /** Rescan start → every push queued (parse, translate 1,100 + 100 resources, hash, push). */
  rescanMs: number;
  cpuMs: number;
  pushes: number;
  /** Pushes queued → the last client applied. */
  deliverMs: number;
  /** Per client: encoded DeltaDiscoveryResponse bytes, and TLS bytes read (rchar). */
  bytes: number[];
  readBytes: number[];
}

export interface Round {
  n: number;
  spawnToReady: number[];
  /** Process boot: spawn → XdsClient.start(). */
  spawnToStart: number[];
  startToReady: number[];
  sync: ResponseSize[];
  syncBytes: number[];
  syncReadBytes: number[];
  stateHeap: number[];
  rssBeforeStart: number[];
  /** Control plane CPU from the first spawn until every client was synced. */
  cpSyncCpuMs: number;
  agentMem: MemoryReport[];
  changes: ChangeResult[];
  renames: ChangeResult[];
  cpWithClients?: MemoryReport & { streams: number };
}

export interface CpRun {
  debounceMs: number;
  startupMs: number;
  addresses: number;
  authorizations: number;
  idle: MemoryReport & { streams: number };
  rounds: Round[];
}

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

  #log(name: string): { fd: number; file: string } {
    const file = join(this.root, `${name}.log`);
    const fd = openSync(file, 'a');
    this.#fds.push(fd);
    return { fd, file };
  }

  async startControlPlane(tag: string, debounceMs?: number): Promise<{ cp: CpChild; ready: Extract<CpReport, { type: 'ready' }> }> {
    const log = this.#log(`control-plane-${tag}`);
    const args = ['--role', CP_ROLE, '--config', this.configDir, '--state-dir', join(this.root, `state-${tag}`), ...(debounceMs === undefined ? [] : ['--debounce-ms', String(debounceMs)])];
    const cp: CpChild = new Child('control plane', this.#cpModule, args, log.fd, log.file);
    this.children.add(cp);
    const ready = await cp.take((m): m is Extract<CpReport, { type: 'ready' }> => m.type === 'ready', 'the control plane to start', 60_000);
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

  /** Rewrites a probe policy with revision `seq`: in place (like most tools), or by rename (like editors and ConfigMap volumes). */
  #write(file: string, name: string, seq: number, how: 'in-place' | 'rename'): void {
    const text = probePolicy(name, seq);
    if (how === 'in-place') writeFileSync(file, text);
    else {
      const tmp = join(this.configDir, 'policies', `.${name}.tmp`);
      writeFileSync(tmp, text);
      renameSync(tmp, file);
    }
  }

  async change(cp: CpChild, agents: AgentChild[], probe: BenchConfig['probe'], how: 'in-place' | 'rename'): Promise<ChangeResult> {
    const seq = ++this.#seq;
    const read0 = agents.map((a) => readChars(a.pid));
    const t0 = nowMs();
    this.#write(probe.file, probe.name, seq, how);
    const timeout = 15_000;
    type Applied = Extract<AgentReport, { type: 'applied' }>;
    const applied = await Promise.all(
      agents.map((a) => a.take((m): m is Applied => m.type === 'applied' && m.key === probe.key && m.seq === seq, `revision ${seq} of ${probe.key}`, timeout)),
    );
    const readBytes = agents.map((a, i) => readChars(a.pid) - read0[i]!);
    const rescan = await cp.take(
      (m): m is Extract<CpReport, { type: 'rescan' }> => m.type === 'rescan' && m.startMs >= t0,
      `the rescan of revision ${seq}`,
      timeout,
    );
    const latencies = applied.map((a) => a.atMs - t0);
    const r: ChangeResult = {
      seq,
      latencies,
      p50: median(latencies),
      max: max(latencies),
      toRescanMs: rescan.startMs - t0,
      parseMs: rescan.parsedMs - rescan.startMs,
      rescanMs: rescan.doneMs - rescan.startMs,
      cpuMs: rescan.cpuMs,
      pushes: rescan.pushes,
      deliverMs: max(applied.map((a) => a.atMs)) - rescan.doneMs,
      bytes: applied.map((a) => a.response.bytes),
      readBytes,
    };
    if (applied.some((a) => a.response.typeUrl !== TYPE_AUTHORIZATION || a.response.resources !== 1)) {
      progress(`warning: revision ${seq} came in a response of ${applied[0]!.response.resources} resources`);
    }
    progress(`  ${how} revision ${seq}: p50 ${r.p50.toFixed(0)} ms, max ${r.max.toFixed(0)} ms (write→rescan ${r.toRescanMs.toFixed(0)}, rescan ${r.rescanMs.toFixed(0)}, deliver ${r.deliverMs.toFixed(0)})`);
    await sleep(GAP_MS);
    return r;
  }

  async round(cp: CpChild, ready: Extract<CpReport, { type: 'ready' }>, tag: string, n: number, opts: { rename: boolean; cpMemory: boolean }): Promise<Round> {
    progress(`${tag}: starting ${n} xDS client process(es)`);
    const log = this.#log(`agents-${tag}-${n}`);
    const agents: AgentChild[] = [];
    const cpu0 = await this.cpCpuMs(cp);
    try {
      for (let i = 0; i < n; i++) {
        const node = `bench-${tag}-${n}-${String(i).padStart(2, '0')}`;
        // Each client proves its own node, as an agent does (it reports no pods: no pod CIDR).
        const token = join(this.root, `${node}.token`);
        writeFileSync(token, mintNodeToken(readNodeSecret(ready.nodeSecret), { node, podCidrs: [] }) + '\n', { mode: 0o600 });
        const a: AgentChild = new Child(`xds client ${node}`, this.#agentModule, ['--address', ready.address, '--root-cert', ready.rootCert, '--token', token, '--node', node], log.fd, log.file);
        this.children.add(a);
        agents.push(a);
      }
      type Ready = Extract<AgentReport, { type: 'ready' }>;
      const readies = await Promise.all(agents.map((a) => a.take((m): m is Ready => m.type === 'ready', 'the initial sync', 30_000 + 1000 * n)));
      const cpSyncCpuMs = (await this.cpCpuMs(cp)) - cpu0;
      const spawnToReady = readies.map((r, i) => r.readyMs - agents[i]!.spawnedMs);
      progress(`${tag}: ${n} synced; spawn → ready p50 ${median(spawnToReady).toFixed(0)} ms, max ${max(spawnToReady).toFixed(0)} ms`);
      await sleep(GAP_MS);
      for (const a of agents) a.send({ type: 'mem' });
      const agentMem = await Promise.all(agents.map((a) => a.take((m): m is MemoryReport => m.type === 'mem', 'a memory report', 10_000)));
      const changes: ChangeResult[] = [];
      for (let i = 0; i < CHANGES; i++) changes.push(await this.change(cp, agents, this.config.probe, 'in-place'));
      const cpWithClients = opts.cpMemory ? await this.cpMemory(cp) : undefined;
      const renames: ChangeResult[] = [];
      if (opts.rename) {
        progress(`${tag}: ${n} clients, policy file replaced by rename`);
        for (let i = 0; i < CHANGES; i++) renames.push(await this.change(cp, agents, this.config.renameProbe, 'rename'));
      }
      return {
        n,
        spawnToReady,
        spawnToStart: readies.map((r, i) => r.startMs - agents[i]!.spawnedMs),
        startToReady: readies.map((r) => r.readyMs - r.startMs),
        sync: readies[0]!.sync,
        syncBytes: readies.map((r) => r.sync.reduce((s, x) => s + x.bytes, 0)),
        syncReadBytes: readies.map((r) => r.syncReadBytes),
        stateHeap: readies.map((r) => r.heapAfterSync - r.heapBeforeStart),
        rssBeforeStart: readies.map((r) => r.rssBeforeStart),
        cpSyncCpuMs,
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

  async run(tag: string, clients: number[], debounceMs: number | undefined, opts: { rename: boolean }): Promise<CpRun> {
    progress(`${tag}: control plane (debounce ${debounceMs ?? `${DEFAULT_DEBOUNCE_MS} ms, the default`})`);
    const { cp, ready } = await this.startControlPlane(tag, debounceMs);
    try {
      progress(`${tag}: serving ${ready.addresses} addresses and ${ready.authorizations} authorizations on ${ready.address} after ${(ready.readyMs - cp.spawnedMs).toFixed(0)} ms`);
      await sleep(1000);
      const idle = await this.cpMemory(cp);
      const rounds: Round[] = [];
      const largest = Math.max(...clients);
      for (const n of clients) rounds.push(await this.round(cp, ready, tag, n, { rename: opts.rename && n === largest, cpMemory: n === largest }));
      return { debounceMs: debounceMs ?? DEFAULT_DEBOUNCE_MS, startupMs: ready.readyMs - cp.spawnedMs, addresses: ready.addresses, authorizations: ready.authorizations, idle, rounds };
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
