// `make bench` (control plane): with 1,000 workloads and 100 AuthorizationPolicies, how long a
// policy edit takes to reach 1, 10 and 50 xDS clients, how many bytes a push costs against the
// initial sync, and how much memory the control plane and each client use. The control plane
// and every client run as processes of their own; writes a section of docs/benchmarks.md.
import { fork, spawnSync, type ChildProcess } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, realpathSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism, cpus, release, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { packageRoot } from '../cluster/index.js';
import { ControlPlane } from '../controlplane/index.js';
import { TYPE_ADDRESS, TYPE_AUTHORIZATION } from '../xds/index.js';
import { memoryReport, nowMs, readChars, type AgentCommand, type AgentReport, type MemoryReport, type ResponseSize } from './xds-agent.js';
import { replaceSection, sectionMarkers } from './sections.js';
import { median } from './tools.js';

// ---- the generated mesh ---------------------------------------------------------------------

export const NAMESPACES = 20;
export const PODS_PER_NAMESPACE = 50;
export const SERVICES_PER_NAMESPACE = 5;
export const POLICIES = 100;
const NODES = 20;
const ROOT_NAMESPACE = 'istio-system';

const ns = (i: number): string => `bench-${String(i).padStart(2, '0')}`;
const principal = (n: number, sa: string): string => `cluster.local/ns/${ns(n % NAMESPACES)}/sa/${sa}`;

/** The policy the benchmark edits: its only principal names the revision (see xds-agent probeSeq). */
export function probePolicy(name: string, seq: number): string {
  return `# Edited by the benchmark: each revision changes the principal below.
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: ${name}
  namespace: ${ns(0)}
spec:
  selector:
    matchLabels:
      app: svc-0
  action: ALLOW
  rules:
    - from:
        - source:
            principals: ["${principal(1, `rev-${seq}`)}"]
      to:
        - operation:
            ports: ["8080"]
`;
}

/** The 98 other policies: every scope, both actions, principals, namespaces, IP blocks, ports. */
function policy(i: number): { action: 'ALLOW' | 'DENY'; scope: 'GLOBAL' | 'NAMESPACE' | 'WORKLOAD_SELECTOR'; yaml: string } {
  const head = (namespace: string, action: string, selector?: string) =>
    `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: p${String(i).padStart(3, '0')}
  namespace: ${namespace}
spec:
${selector ? `  selector:\n    matchLabels:\n      app: ${selector}\n` : ''}  action: ${action}
  rules:
`;
  if (i === 0) return { action: 'DENY', scope: 'GLOBAL', yaml: head(ROOT_NAMESPACE, 'DENY') + `    - from:\n        - source:\n            ipBlocks: ["203.0.113.0/24", "198.51.100.0/24"]\n` };
  // A selector in the root namespace selects in every namespace.
  if (i === 1)
    return {
      action: 'ALLOW',
      scope: 'WORKLOAD_SELECTOR',
      yaml: head(ROOT_NAMESPACE, 'ALLOW', 'svc-4') + `    - from:\n        - source:\n            namespaces: ["${ROOT_NAMESPACE}"]\n      to:\n        - operation:\n            ports: ["9090"]\n`,
    };
  const n = i % NAMESPACES;
  const k = i % SERVICES_PER_NAMESPACE;
  switch (i % 5) {
    case 0:
      return {
        action: 'ALLOW',
        scope: 'NAMESPACE',
        yaml: head(ns(n), 'ALLOW') + `    - from:\n        - source:\n            namespaces: ["${ns(n)}", "${ns(n + 1)}"]\n      to:\n        - operation:\n            ports: ["8080", "9090"]\n`,
      };
    case 1:
      return {
        action: 'ALLOW',
        scope: 'WORKLOAD_SELECTOR',
        yaml:
          head(ns(n), 'ALLOW', `svc-${k}`) +
          `    - from:\n        - source:\n            principals: ["${principal(n + 1, 'sa-0')}", "${principal(n + 2, 'sa-1')}", "${principal(n + 3, '*')}"]\n      to:\n        - operation:\n            ports: ["8080"]\n`,
      };
    case 2:
      return {
        action: 'DENY',
        scope: 'WORKLOAD_SELECTOR',
        yaml: head(ns(n), 'DENY', `svc-${k}`) + `    - from:\n        - source:\n            ipBlocks: ["192.168.${i}.0/24"]\n            notNamespaces: ["${ns(n)}"]\n      to:\n        - operation:\n            notPorts: ["15021"]\n`,
      };
    case 3:
      return {
        action: 'ALLOW',
        scope: 'WORKLOAD_SELECTOR',
        yaml:
          head(ns(n), 'ALLOW', `svc-${k}`) +
          `    - from:\n        - source:\n            serviceAccounts: ["${ns(n)}/sa-${(k + 1) % SERVICES_PER_NAMESPACE}"]\n      when:\n        - key: destination.port\n          values: ["9090"]\n`,
      };
    default:
      return {
        action: 'DENY',
        scope: 'WORKLOAD_SELECTOR',
        yaml: head(ns(n), 'DENY', `svc-${k}`) + `    - from:\n        - source:\n            notPrincipals: ["cluster.local/ns/${ns(n)}/*"]\n      to:\n        - operation:\n            ports: ["9090"]\n`,
      };
  }
}

export interface BenchConfig {
  /** The probe policy edited in place, and the one replaced by rename. */
  probe: { file: string; key: string; name: string };
  renameProbe: { file: string; key: string; name: string };
  pods: number;
  services: number;
  policies: { total: number; allow: number; deny: number; global: number; namespace: number; selector: number };
}

/** Writes the config directory: namespaces, one file of pods and services per namespace, one file per policy. */
export function writeBenchConfig(dir: string): BenchConfig {
  mkdirSync(join(dir, 'workloads'), { recursive: true });
  mkdirSync(join(dir, 'policies'), { recursive: true });
  const nsDocs = [`apiVersion: v1\nkind: Namespace\nmetadata:\n  name: ${ROOT_NAMESPACE}\n`];
  for (let n = 0; n < NAMESPACES; n++) nsDocs.push(`apiVersion: v1\nkind: Namespace\nmetadata:\n  name: ${ns(n)}\n  labels:\n    nodemesh.io/dataplane-mode: ambient\n`);
  writeFileSync(join(dir, 'namespaces.yaml'), nsDocs.join('---\n'));
  for (let n = 0; n < NAMESPACES; n++) {
    const docs: string[] = [];
    for (let i = 0; i < PODS_PER_NAMESPACE; i++) {
      const g = n * PODS_PER_NAMESPACE + i;
      const k = i % SERVICES_PER_NAMESPACE;
      docs.push(`apiVersion: v1
kind: Pod
metadata:
  name: app-${k}-${String(i).padStart(2, '0')}
  namespace: ${ns(n)}
  labels: { app: svc-${k}, version: v${1 + (i % 2)} }
spec:
  nodeName: node-${String(g % NODES).padStart(2, '0')}
  serviceAccountName: sa-${k}
  containers:
    - name: app
      command: [sleep, infinity]
      ports:
        - { name: http, containerPort: 8080 }
        - { name: grpc, containerPort: 9090 }
status:
  podIP: 10.244.${Math.floor(g / 250)}.${(g % 250) + 1}
`);
    }
    for (let k = 0; k < SERVICES_PER_NAMESPACE; k++) {
      docs.push(`apiVersion: v1
kind: Service
metadata: { name: svc-${k}, namespace: ${ns(n)} }
spec:
  clusterIP: 10.96.${n}.${k + 1}
  selector: { app: svc-${k} }
  ports:
    - { name: http, port: 80, targetPort: http }
    - { name: grpc, port: 9090, targetPort: 9090 }
`);
    }
    writeFileSync(join(dir, 'workloads', `${ns(n)}.yaml`), docs.join('---\n'));
  }
  const counts = { total: 2, allow: 2, deny: 0, global: 0, namespace: 0, selector: 2 };
  for (let i = 0; i < POLICIES - 2; i++) {
    const p = policy(i);
    writeFileSync(join(dir, 'policies', `p${String(i).padStart(3, '0')}.yaml`), p.yaml);
    counts.total++;
    counts[p.action === 'ALLOW' ? 'allow' : 'deny']++;
    counts[p.scope === 'GLOBAL' ? 'global' : p.scope === 'NAMESPACE' ? 'namespace' : 'selector']++;
  }
  const probe = (name: string) => ({ name, key: `${ns(0)}/${name}`, file: join(dir, 'policies', `${name}.yaml`) });
  const config: BenchConfig = {
    probe: probe('probe'),
    renameProbe: probe('probe-rename'),
    pods: NAMESPACES * PODS_PER_NAMESPACE,
    services: NAMESPACES * SERVICES_PER_NAMESPACE,
    policies: counts,
  };
  for (const p of [config.probe, config.renameProbe]) writeFileSync(p.file, probePolicy(p.name, 0));
  return config;
}

// ---- docs/benchmarks.md -----------------------------------------------------------------------

const SECTION = 'controlplane';
export const { start: SECTION_START, end: SECTION_END } = sectionMarkers(SECTION);

// ---- the control plane process ----------------------------------------------------------------

type CpReport =
  | { type: 'ready'; address: string; token: string; rootCert: string; startMs: number; readyMs: number; addresses: number; authorizations: number; errors: string[] }
  /** A rescan that changed something: when it started, finished parsing, and had queued every push. */
  | { type: 'rescan'; startMs: number; parsedMs: number; doneMs: number; cpuMs: number; pushes: number }
  | (MemoryReport & { streams: number })
  | { type: 'cpu'; cpuMs: number }
  | { type: 'error'; message: string };

type CpCommand = { type: 'mem' } | { type: 'cpu' };

const CP_ROLE = 'control-plane';

/** Runs ControlPlane.start (what `nodemesh control-plane` runs) with its stages timed. */
async function serveControlPlane(argv: string[]): Promise<void> {
  const send = (r: CpReport): void => void process.send?.(r);
  process.on('disconnect', () => process.exit(0));
  const { values } = parseArgs({ args: argv, options: { role: { type: 'string' }, config: { type: 'string' }, 'state-dir': { type: 'string' }, 'debounce-ms': { type: 'string' } } });
  const startMs = nowMs();
  const debounce = values['debounce-ms'];
  const cp = await ControlPlane.start({
    configDir: values.config!,
    stateDir: values['state-dir']!,
    listen: '127.0.0.1:0',
    admin: '127.0.0.1:0',
    ...(debounce ? { debounceMs: Number(debounce) } : {}),
  });
  // Time each rescan that changes something. The `change` listener prepended here runs before
  // the control plane's own, which translates and queues the pushes inside rescan().
  const config = cp.config;
  const rescan = config.rescan.bind(config);
  let parsedMs = NaN;
  let pushes = 0;
  config.prependListener('change', () => (parsedMs = nowMs()));
  cp.xds.on('push', () => pushes++);
  config.rescan = (force?: boolean): boolean => {
    const t0 = nowMs();
    const cpu0 = process.cpuUsage();
    pushes = 0;
    const changed = rescan(force);
    if (changed) {
      const cpu = process.cpuUsage(cpu0);
      send({ type: 'rescan', startMs: t0, parsedMs, doneMs: nowMs(), cpuMs: (cpu.user + cpu.system) / 1000, pushes });
    }
    return changed;
  };
  process.on('message', (c: CpCommand) => {
    if (c.type === 'mem') send({ ...memoryReport(), streams: cp.xds.streams().length });
    else if (c.type === 'cpu') {
      const u = process.cpuUsage();
      send({ type: 'cpu', cpuMs: (u.user + u.system) / 1000 });
    }
  });
  const errors = cp.configErrors().problems.filter((p) => p.severity === 'error');
  send({
    type: 'ready',
    address: cp.address,
    token: cp.paths.token,
    rootCert: cp.paths.rootCert,
    startMs,
    readyMs: nowMs(),
    addresses: cp.xds.versions(TYPE_ADDRESS).size,
    authorizations: cp.xds.versions(TYPE_AUTHORIZATION).size,
    errors: errors.map((p) => `${p.file}:${p.line}: ${p.message}`),
  });
}

// ---- the parent: child processes with bounded waits -------------------------------------------

const ENV = process.env;
const CLIENTS = (ENV.NODEMESH_BENCH_CP_CLIENTS ?? '1,10,50').split(',').map(Number);
const CHANGES = Number(ENV.NODEMESH_BENCH_CP_CHANGES ?? 5);
/** A second run at the largest N with this debounce, to show what the default adds ('' skips it). */
const COMPARE_DEBOUNCE = ENV.NODEMESH_BENCH_CP_COMPARE_DEBOUNCE_MS ?? '10';
const DEFAULT_DEBOUNCE_MS = 100; // ConfigSource's default (src/controlplane/sources.ts)
const DEFAULT_RESCAN_MS = 2000;
const DEADLINE_MS = Number(ENV.NODEMESH_BENCH_CP_DEADLINE_S ?? 360) * 1000;
const GAP_MS = 500;

function progress(msg: string): void {
  process.stderr.write(`==> ${msg}\n`);
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

class Child<M extends { type: string }> {
  readonly proc: ChildProcess;
  readonly spawnedMs = nowMs();
  readonly #inbox: M[] = [];
  readonly #wake = new Set<() => void>();
  #exited: string | undefined;

  constructor(
    readonly name: string,
    module: string,
    args: string[],
    logFd: number,
    readonly logFile: string,
  ) {
    this.proc = fork(module, args, { execArgv: ['--expose-gc'], stdio: ['ignore', logFd, logFd, 'ipc'] });
    const wake = () => {
      for (const w of this.#wake) w();
    };
    this.proc.on('message', (m) => {
      this.#inbox.push(m as M);
      wake();
    });
    this.proc.on('exit', (code, signal) => {
      this.#exited = `exited (code ${code}, signal ${signal})`;
      wake();
    });
    this.proc.on('error', (err) => {
      this.#exited ??= `failed: ${err.message}`;
      wake();
    });
  }

  get pid(): number {
    return this.proc.pid ?? -1;
  }

  get running(): boolean {
    return this.proc.exitCode === null && this.proc.signalCode === null && this.#exited === undefined;
  }

  send(m: AgentCommand | CpCommand): void {
    if (this.running) this.proc.send(m);
  }

  /** The first message (already received or to come) that `pred` accepts, taken from the inbox. */
  take<T extends M>(pred: (m: M) => m is T, what: string, timeoutMs: number): Promise<T> {
    return new Promise((resolve, reject) => {
      const check = (): boolean => {
        const i = this.#inbox.findIndex(pred);
        if (i >= 0) return done(() => resolve(this.#inbox.splice(i, 1)[0] as T));
        const err = this.#inbox.find((m) => m.type === 'error') as { message?: string } | undefined;
        if (err) return done(() => reject(new Error(`${this.name} failed while we waited for ${what}:\n${err.message}`)));
        if (this.#exited) return done(() => reject(new Error(`${this.name} (pid ${this.pid}) ${this.#exited} while we waited for ${what}; see ${this.logFile}`)));
        return false;
      };
      const timer = setTimeout(
        () => done(() => reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what} from ${this.name} (pid ${this.pid}); see ${this.logFile}`))),
        timeoutMs,
      );
      const done = (f: () => void): true => {
        clearTimeout(timer);
        this.#wake.delete(wakeUp);
        f();
        return true;
      };
      const wakeUp = () => void check();
      if (!check()) this.#wake.add(wakeUp);
    });
  }

  /** SIGTERM, then SIGKILL after 3 s; resolves once the process is gone (or 6 s passed). */
  async stop(): Promise<void> {
    if (!this.running) return;
    const gone = new Promise<void>((r) => this.proc.once('exit', () => r()));
    const within = (ms: number) => Promise.race([gone.then(() => true), sleep(ms).then(() => false)]);
    this.proc.kill('SIGTERM');
    if (await within(3000)) return;
    this.proc.kill('SIGKILL');
    if (!(await within(3000))) progress(`warning: ${this.name} (pid ${this.pid}) did not exit after SIGKILL`);
  }
}

/** What cleanup needs of a child, whatever it reports. */
interface Stoppable {
  readonly proc: ChildProcess;
  readonly running: boolean;
  stop(): Promise<void>;
}

type CpChild = Child<CpReport>;
type AgentChild = Child<AgentReport>;

const max = (xs: number[]): number => (xs.length ? Math.max(...xs) : NaN);
const min = (xs: number[]): number => (xs.length ? Math.min(...xs) : NaN);

interface ChangeResult {
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

interface Round {
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

interface CpRun {
  debounceMs: number;
  startupMs: number;
  addresses: number;
  authorizations: number;
  idle: MemoryReport & { streams: number };
  rounds: Round[];
}

class Bench {
  readonly root = mkdtempSync(join(tmpdir(), 'nm-bench-cp-'));
  readonly configDir = join(this.root, 'config');
  readonly children = new Set<Stoppable>();
  readonly #self = fileURLToPath(import.meta.url);
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
    const cp: CpChild = new Child('control plane', this.#self, args, log.fd, log.file);
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
        const a: AgentChild = new Child(`xds client ${node}`, this.#agentModule, ['--address', ready.address, '--root-cert', ready.rootCert, '--token', ready.token, '--node', node], log.fd, log.file);
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

// ---- the report -------------------------------------------------------------------------------

const f0 = (x: number) => (Number.isFinite(x) ? x.toFixed(0) : 'n/a');
const f1 = (x: number) => (Number.isFinite(x) ? x.toFixed(1) : 'n/a');
const mb = (bytes: number) => f1(bytes / (1 << 20));
const kb = (bytes: number) => (bytes >= 10_240 ? `${f1(bytes / 1024)} KiB` : `${f0(bytes)} B`);
const list = (xs: number[], f = f0) => xs.map(f).join(', ');

interface Summary {
  p50: number;
  max: number;
  toRescan: number;
  rescan: number;
  deliver: number;
}
const summarize = (cs: ChangeResult[]): Summary => ({
  p50: median(cs.map((c) => c.p50)),
  max: median(cs.map((c) => c.max)),
  toRescan: median(cs.map((c) => c.toRescanMs)),
  rescan: median(cs.map((c) => c.rescanMs)),
  deliver: median(cs.map((c) => c.deliverMs)),
});

function machine(): string {
  const nproc = spawnSync('nproc', [], { encoding: 'utf8' }).stdout.trim() || String(availableParallelism());
  return `${nproc} CPUs (nproc; ${cpus()[0]?.model.trim() ?? 'unknown CPU'}), ${f0(totalmem() / 2 ** 30)} GiB RAM shared with other work, kernel ${release()}, Node ${process.versions.node}`;
}

function report(cfg: BenchConfig, main: CpRun, compare: CpRun | undefined, totalS: number): string {
  const rows = main.rounds.map((r) => {
    const s = summarize(r.changes);
    return `| ${r.n} | **${f0(s.p50)}** | **${f0(s.max)}** | ${f0(s.toRescan)} | ${f0(s.rescan)} | ${f0(s.deliver)} | ${f0(median(r.spawnToReady))} / ${f0(max(r.spawnToReady))} | ${f0(median(r.startToReady))} / ${f0(max(r.startToReady))} |`;
  });
  const base = summarize(main.rounds[0]!.changes);
  const big = main.rounds[main.rounds.length - 1]!;
  const bigS = summarize(big.changes);
  const deltaBytes = median(main.rounds.flatMap((r) => r.changes.flatMap((c) => c.bytes)));
  const deltaRead = median(main.rounds.flatMap((r) => r.changes.flatMap((c) => c.readBytes)));
  const addr = big.sync.find((s) => s.typeUrl === TYPE_ADDRESS);
  const auth = big.sync.find((s) => s.typeUrl === TYPE_AUTHORIZATION);
  const syncBytes = median(big.syncBytes);
  const syncRead = median(big.syncReadBytes);
  const agentRss = big.agentMem.map((m) => m.rss);
  const agentHeap = big.agentMem.map((m) => m.heapUsed);
  // A rescan that starts later than the debounce plus slack was the periodic one: fs.watch missed the write.
  const watched = (cs: ChangeResult[], debounceMs: number) => cs.filter((c) => c.toRescanMs < debounceMs + 50).length;
  const variant = (label: string, cs: ChangeResult[], debounceMs: number) => {
    const s = summarize(cs);
    const w = watched(cs, debounceMs);
    const note = w === cs.length ? `${w} of ${cs.length}` : `**${w} of ${cs.length}**; the others waited for the ${DEFAULT_RESCAN_MS / 1000} s periodic rescan (worst p50 ${f0(max(cs.map((c) => c.p50)))} ms)`;
    return `| ${label} | ${f0(s.p50)} | ${f0(s.max)} | ${f0(s.toRescan)} | ${f0(s.rescan)} | ${f0(s.deliver)} | ${note} |`;
  };
  const variants = [variant(`default debounce (${DEFAULT_DEBOUNCE_MS} ms), file rewritten in place`, big.changes, DEFAULT_DEBOUNCE_MS)];
  if (compare) variants.push(variant(`debounce ${compare.debounceMs} ms (\`ControlPlaneOptions.debounceMs\`), in place`, compare.rounds[0]!.changes, compare.debounceMs));
  if (big.renames.length > 0) variants.push(variant(`default debounce, file replaced by rename (write \`.tmp\`, \`rename(2)\`)`, big.renames, DEFAULT_DEBOUNCE_MS));
  const syncResources = big.sync.reduce((n, x) => n + x.resources, 0);
  const share = (x: number) => `${f0((x / bigS.p50) * 100)} %`;
  const raw = (label: string, cs: ChangeResult[]) =>
    `- ${label}: p50 ${list(cs.map((c) => c.p50))}; max ${list(cs.map((c) => c.max))}; write → rescan ${list(cs.map((c) => c.toRescanMs))}; rescan ${list(cs.map((c) => c.rescanMs))} (CPU ${list(cs.map((c) => c.cpuMs))}); queued → last applied ${list(cs.map((c) => c.deliverMs))}`;
  const rawLines = [
    ...main.rounds.map((r) => raw(`N=${r.n}, in place`, r.changes)),
    ...(big.renames.length ? [raw(`N=${big.n}, rename`, big.renames)] : []),
    ...(compare ? compare.rounds.map((r) => raw(`N=${r.n}, debounce ${compare.debounceMs} ms, in place`, r.changes)) : []),
    ...main.rounds.map((r) => `- N=${r.n} spawn → ready ms: ${list(r.spawnToReady)}`),
    `- delta push DeltaDiscoveryResponse bytes (all clients, all changes): ${[...new Set(main.rounds.flatMap((r) => r.changes.flatMap((c) => c.bytes)))].sort((a, b) => a - b).join(', ')}; TLS bytes read per client per change: min ${f0(min(main.rounds.flatMap((r) => r.changes.flatMap((c) => c.readBytes))))}, max ${f0(max(main.rounds.flatMap((r) => r.changes.flatMap((c) => c.readBytes))))}`,
    `- control plane memory MiB, idle / ${big.n} clients: RSS ${mb(main.idle.rss)} / ${mb(big.cpWithClients?.rss ?? NaN)}, heap total ${mb(main.idle.heapTotal)} / ${mb(big.cpWithClients?.heapTotal ?? NaN)}, external ${mb(main.idle.external)} / ${mb(big.cpWithClients?.external ?? NaN)}, array buffers ${mb(main.idle.arrayBuffers)} / ${mb(big.cpWithClients?.arrayBuffers ?? NaN)}; started in ${f0(main.startupMs)} ms`,
    ...main.rounds.map((r) => `- N=${r.n}: control plane CPU for the initial syncs ${f0(r.cpSyncCpuMs)} ms; spawn → \`start()\` p50 ${f0(median(r.spawnToStart))} ms`),
    `- N=${big.n} client RSS MiB: ${list(agentRss.map((x) => x / (1 << 20)), f1)}`,
  ];
  return `## Control plane: policy propagation, bytes per push, memory

Command: \`make bench\` (\`node dist/bench/controlplane.js\`; N = ${CLIENTS.join(', ')} clients, ${CHANGES} policy changes per N, medians).
Machine: ${machine()}. Measured ${new Date().toISOString().slice(0, 10)}; the whole run took ${f0(totalS)} s.

**Mesh:** ${cfg.pods.toLocaleString('en')} workloads (Pods with \`status.podIP\`, ${NAMESPACES} ambient namespaces × ${PODS_PER_NAMESPACE}, spread over ${NODES} nodes),
${cfg.services} Services (each selecting ${PODS_PER_NAMESPACE / SERVICES_PER_NAMESPACE} pods), ${cfg.policies.total} AuthorizationPolicies (${cfg.policies.allow} ALLOW, ${cfg.policies.deny} DENY;
${cfg.policies.global} GLOBAL, ${cfg.policies.namespace} NAMESPACE, ${cfg.policies.selector} WORKLOAD_SELECTOR; principals, namespaces, service accounts, IP blocks, ports,
\`when\`), one file per policy. Served: ${main.addresses.toLocaleString('en')} Address and ${main.authorizations} Authorization resources (the ${cfg.policies.total}
policies and \`istio-system/istio_converted_static_strict\`, always served).

**How:** the control plane is its own process running \`ControlPlane.start\` (what \`nodemesh control-plane\`
runs; TLS, token, 127.0.0.1 port 0). Each client is its own Node process (\`src/bench/xds-agent.ts\`): the real
\`XdsClient\` + \`ProxyState\` over TLS with the token and root from the control plane's state dir, one node name
each. A change rewrites one AuthorizationPolicy file (a new principal, so exactly one Authorization changes).
Latency is from just before the write until each client's \`ProxyState\` emits the new revision
(\`process.hrtime\`, CLOCK_MONOTONIC, the same clock in every process). The control plane's debounce is part of
the figure: \`ConfigSource\` waits for ${DEFAULT_DEBOUNCE_MS} ms of quiet after an \`fs.watch\` event and also rescans every
${DEFAULT_RESCAN_MS / 1000} s (\`ControlPlaneOptions.debounceMs\` / \`rescanMs\`; the CLI sets neither, so these defaults are what
operators get).

### Propagation: file write → applied in every client (ms)

| clients | p50 across clients | max across clients | write → rescan starts (debounce) | rescan: parse, translate, queue pushes | queued → last client applied | client spawn → synced p50 / max | \`XdsClient.start()\` → synced p50 / max |
|---|---|---|---|---|---|---|---|
${rows.join('\n')}

Ratio N=${big.n} / N=1: p50 **${(bigS.p50 / base.p50).toFixed(2)}×**, max **${(bigS.max / base.max).toFixed(2)}×**. The rescan column is the
control plane recomputing everything (all ${main.addresses.toLocaleString('en')} addresses re-translated, re-encoded and re-hashed
to find the one Authorization that changed), median CPU ${f0(median(main.rounds.flatMap((r) => r.changes.map((c) => c.cpuMs))))} ms.
At N=${big.n} the p50 of ${f0(bigS.p50)} ms is the debounce (${f0(bigS.toRescan)} ms, ${share(bigS.toRescan)}), the recompute (${f0(bigS.rescan)} ms,
${share(bigS.rescan)}) and delivery to the slowest client (${f0(bigS.deliver)} ms; ${big.n} processes on ${availableParallelism()} CPUs wake, decrypt, decode, apply).

Initial sync: ${big.n} clients started at once were synced ${f0(median(big.startToReady))} ms (p50) after \`XdsClient.start()\`; before that,
${f0(median(big.spawnToStart))} ms (p50) went to ${big.n} Node processes booting on ${availableParallelism()} CPUs (an artefact of running every client on one
machine). The control plane spent ${f0(big.cpSyncCpuMs)} ms of CPU serving those ${big.n} syncs (${f0(big.cpSyncCpuMs / big.n)} ms each: the
${syncResources}-resource response is encoded again for every stream).

### Debounce and how the file is written (N=${big.n}, ms)

| variant | p50 | max | write → rescan | rescan | queued → last applied | rescans started within debounce + 50 ms |
|---|---|---|---|---|---|---|
${variants.join('\n')}

A rescan that starts more than 50 ms after the debounce is the periodic one (every ${DEFAULT_RESCAN_MS / 1000} s): \`fs.watch\` did not report the write.
With a file replaced by rename, Node ${process.versions.node}'s recursive \`fs.watch\` on Linux (one inotify watch per file,
set up by path but bound to the inode) keeps watching the replaced inode and does not watch the new one, so whether
a write is seen depends on races with the temporary file; the others wait for the periodic rescan.

### Bytes per client

Measured in each client by wrapping the \`responseDeserialize\` that \`XdsClient\` gives grpc-js: the length of
each encoded \`DeltaDiscoveryResponse\` (the gRPC message; add 5 B of gRPC prefix, 9 B per HTTP/2 frame of up to
16 KiB, ~22 B per TLS record). Cross-check: bytes the client process read from its socket (\`rchar\` of
\`/proc/<pid>/io\`), which includes TLS, HTTP/2 and keepalive.

| | DeltaDiscoveryResponse | resources | TLS bytes read |
|---|---|---|---|
| initial sync: Address | ${kb(addr?.bytes ?? NaN)} | ${addr?.resources ?? 'n/a'} | |
| initial sync: Authorization | ${kb(auth?.bytes ?? NaN)} | ${auth?.resources ?? 'n/a'} | |
| initial sync, total | **${kb(syncBytes)}** | ${(addr?.resources ?? 0) + (auth?.resources ?? 0)} | ${kb(syncRead)} |
| one policy change (delta push) | **${kb(deltaBytes)}** | 1 | ${kb(deltaRead)} |
| **delta / full sync** | **${((deltaBytes / syncBytes) * 100).toFixed(3)} %** (1 : ${f0(syncBytes / deltaBytes)}) | | |

### Memory (after a full GC)

| process | RSS MiB | V8 heap used MiB |
|---|---|---|
| control plane, idle (${cfg.pods.toLocaleString('en')} workloads, ${cfg.policies.total} policies, no client) | ${mb(main.idle.rss)} | ${mb(main.idle.heapUsed)} |
| control plane, ${big.cpWithClients?.streams ?? big.n} clients connected | ${mb(big.cpWithClients?.rss ?? NaN)} | ${mb(big.cpWithClients?.heapUsed ?? NaN)} |
| → per connected client | ${f1((big.cpWithClients!.rss - main.idle.rss) / big.n / 1024)} KiB | ${f1((big.cpWithClients!.heapUsed - main.idle.heapUsed) / big.n / 1024)} KiB |
| one client process before \`XdsClient.start()\` (Node, modules, .proto files; p50) | ${mb(median(big.rssBeforeStart))} | |
| one client process after sync (p50 / max of ${big.n}) | ${mb(median(agentRss))} / ${mb(max(agentRss))} | ${mb(median(agentHeap))} / ${mb(max(agentHeap))} |
| its xDS state (heap after sync − heap before \`start()\`, p50) | | ${mb(median(big.stateHeap))} |

Raw numbers (ms unless noted; one value per change):
${rawLines.join('\n')}
`;
}

// ---- main -------------------------------------------------------------------------------------

async function main(): Promise<number> {
  const t0 = nowMs();
  const bench = new Bench();
  const watchdog = setTimeout(() => {
    process.stderr.write(`bench failed: still running after ${DEADLINE_MS / 1000} s (NODEMESH_BENCH_CP_DEADLINE_S); killing every child; logs in ${bench.root}\n`);
    bench.killAll();
    process.exit(1);
  }, DEADLINE_MS);
  watchdog.unref();
  const onSignal = (sig: NodeJS.Signals) => {
    bench.killAll();
    process.stderr.write(`received ${sig}; killed the children; logs in ${bench.root}\n`);
    process.exit(130);
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  let ok = false;
  try {
    progress(`control-plane benchmark: ${CLIENTS.join(', ')} clients, ${CHANGES} changes each (NODEMESH_BENCH_CP_CLIENTS, NODEMESH_BENCH_CP_CHANGES)`);
    mkdirSync(bench.configDir);
    bench.config = writeBenchConfig(bench.configDir);
    const mainRun = await bench.run('default', CLIENTS, undefined, { rename: true });
    const compare = COMPARE_DEBOUNCE ? await bench.run(`debounce-${COMPARE_DEBOUNCE}`, [Math.max(...CLIENTS)], Number(COMPARE_DEBOUNCE), { rename: false }) : undefined;
    const section = report(bench.config, mainRun, compare, (nowMs() - t0) / 1000);
    const file = join(packageRoot, 'docs', 'benchmarks.md');
    writeFileSync(file, replaceSection(existsSync(file) ? readFileSync(file, 'utf8') : undefined, SECTION, section));
    process.stdout.write(`\n${section}\nwritten to ${file}\n`);
    ok = true;
    return 0;
  } finally {
    await bench.cleanup(!ok);
    if (!ok) process.stderr.write(`logs kept in ${bench.root}\n`);
    clearTimeout(watchdog);
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}

const entry = process.argv[1] ? realpathSync(process.argv[1]) : '';
if (entry === realpathSync(fileURLToPath(import.meta.url))) {
  const role = process.argv.includes(CP_ROLE) && process.argv.includes('--role');
  (role ? serveControlPlane(process.argv.slice(2)).then(() => 0) : main()).then(
    (c) => (process.exitCode = c),
    (e: unknown) => {
      process.stderr.write(`bench failed: ${(e as Error).stack ?? String(e)}\n`);
      if (role && process.send) process.send({ type: 'error', message: (e as Error).stack ?? String(e) } satisfies CpReport, () => process.exit(1));
      else process.exitCode = 1;
    },
  );
}
