// `make bench` (workers): what proxy workers (--workers, src/agent/proxy-workers.ts) buy. The
// four simulated nodes of the mesh bench come up twice, with NODEMESH_WORKERS=1 and then 2,
// and the same-node splice off (NODEMESH_SPLICE=off: with it on the kernel moves same-node
// bytes and no proxy thread is in the way). In each: iperf3 with 4 parallel streams over no
// mesh, ambient same node (the proxy relays every byte) and ambient cross node (HBONE, both
// nodes' agents), and the agents' CPU. Medians over the runs; writes its section of
// docs/benchmarks.md.
import { mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import { availableParallelism, release, tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { multiNodeNodes, progress, up } from '../cluster/index.js';
import { PORTS } from '../net/index.js';
import { nsenter } from '../sim/index.js';
import { BenchCluster, IPERF_PORT, PATHS, writeBenchConfig, type PathDef } from './pods.js';
import { MeshTeardown, runMain, writeBenchSection } from './run.js';
import { BENCH_OPTIONS_HELP, cpuSeconds, median, parseBenchArgs, parseIperf, rssMb, isRoot } from './tools.js';

const HELP = `Usage: node dist/bench/workers.js [--quick] [--runs N] [--seconds S]

Proxy workers: brings the mesh bench's four simulated nodes up with one proxy per agent
(NODEMESH_WORKERS=1) and again with two (the main thread's and one worker thread), the
same-node kernel splice off so the proxies carry every byte, and measures iperf3 with 4
parallel streams: no mesh, ambient same node and ambient cross node (HBONE). Reports the
aggregate throughput of each setting, the ratio of two proxies to one, and the agents' CPU and
memory; writes the workers section of docs/benchmarks.md. Needs root.

${BENCH_OPTIONS_HELP}`;
const ARGS = parseBenchArgs(HELP);
const STREAMS = 4;
const SETTINGS = [1, 2] as const;
const byName = (n: string): PathDef => PATHS.find((p) => p.name === n)!;
const MEASURED = [byName('direct-same'), byName('ambient-same'), byName('ambient-cross')];

interface Sample {
  gbps: number;
  /** Agent CPU seconds per second of the run, summed over the path's agents. */
  cores: number;
  /** The whole machine's busy CPUs during the run (from /proc/stat): load generators included. */
  machine: number;
  /** node-a's agent: its two busiest threads, CPU seconds per second each. */
  threads: [number, number];
  /** node-a's flow records of the run's iperf3 connections, by the proxy that served them. */
  perProxy: number[];
}

/** Busy and total jiffies of the machine (/proc/stat's cpu line). */
function machineTicks(): { busy: number; total: number } {
  const f = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
  const total = f.reduce((a, b) => a + b, 0);
  const idle = (f[3] ?? 0) + (f[4] ?? 0);
  return { busy: total - idle, total };
}

/** utime+stime of each thread of a process, seconds, by thread id. */
function threadSeconds(pid: number): Map<string, number> {
  const out = new Map<string, number>();
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    try {
      const f = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8').split(') ')[1]!.split(' ');
      out.set(tid, (Number(f[11]) + Number(f[12])) / 100);
    } catch {
      /* the thread ended */
    }
  }
  return out;
}

class Bench extends BenchCluster {
  /** node-a's flow records (its admin endpoint, inside its netns). */
  flows(): { id: number; proxy?: number; dst: { port: number }; direction: string }[] {
    const ns = multiNodeNodes(this.sd).find((n) => n.name === 'node-a')?.netnsPath;
    if (!ns) return [];
    const r = spawnSync(nsenter(), [`--net=${ns}`, '--', 'curl', '-sS', '-f', '-m', '5', `http://127.0.0.1:${PORTS.admin}/debug/flows?limit=200`], { encoding: 'utf8', timeout: 10_000, maxBuffer: 16 << 20 });
    return r.status === 0 ? (JSON.parse(r.stdout) as ReturnType<Bench['flows']>) : [];
  }

  sample(p: PathDef): Sample {
    const seen = new Set(this.flows().map((f) => f.id));
    const pids = this.pids(p);
    const agent = this.agentPid('node-a');
    const c0 = pids.reduce((a, pid) => a + cpuSeconds(pid), 0);
    const m0 = machineTicks();
    const t0s = threadSeconds(agent);
    const t0 = performance.now();
    const gbps = parseIperf(this.exec(p.client, ['iperf3', '-c', this.target(p), '-p', String(IPERF_PORT), '-P', String(STREAMS), '-t', String(this.seconds), '-J']));
    const secs = (performance.now() - t0) / 1000;
    const m1 = machineTicks();
    const busiest = [...threadSeconds(agent)].map(([tid, s]) => (s - (t0s.get(tid) ?? 0)) / secs).sort((a, b) => b - a);
    return {
      gbps,
      cores: pids.length ? (pids.reduce((a, pid) => a + cpuSeconds(pid), 0) - c0) / secs : 0,
      machine: ((m1.busy - m0.busy) / (m1.total - m0.total)) * availableParallelism(),
      threads: [busiest[0] ?? 0, busiest[1] ?? 0],
      perProxy: this.#perProxy(seen),
    };
  }

  #perProxy(seen: Set<number>): number[] {
    const out: number[] = [];
    for (const f of this.flows()) {
      if (seen.has(f.id) || f.direction !== 'outbound' || f.dst.port !== IPERF_PORT) continue;
      const k = f.proxy ?? 0;
      out[k] = (out[k] ?? 0) + 1;
    }
    return Array.from(out, (n) => n ?? 0);
  }
}

async function measure(workers: number, runs: number, seconds: number): Promise<{ samples: Map<string, Sample[]>; idleMb: number; peakMb: number; stopped: boolean }> {
  const sd = mkdtempSync(join(tmpdir(), `nm-bench-workers-${workers}-`));
  const dir = mkdtempSync(join(tmpdir(), 'nm-bench-workers-cfg-'));
  writeBenchConfig(dir);
  const teardown = new MeshTeardown('bench', sd, [dir]);
  // The agents `up` starts inherit these.
  process.env.NODEMESH_WORKERS = String(workers);
  process.env.NODEMESH_SPLICE = 'off';
  const samples = new Map<string, Sample[]>(MEASURED.map((p) => [p.name, []]));
  try {
    progress(`${workers} proxy(ies) per agent: bringing the nodes up`);
    await up(dir, sd);
    const b = new Bench(sd, dir, seconds);
    await b.refresh();
    const agent = b.agentPid('node-a');
    const idleMb = rssMb(agent);
    let peakMb = idleMb;
    for (let run = 1; run <= runs; run++) {
      for (const p of MEASURED) {
        await new Promise((r) => setImmediate(r));
        if (teardown.stopping) return { samples, idleMb, peakMb, stopped: true };
        progress(`${workers} proxy(ies), run ${run}/${runs}: ${p.label}: iperf3 -P ${STREAMS}`);
        samples.get(p.name)!.push(b.sample(p));
        peakMb = Math.max(peakMb, rssMb(agent));
      }
    }
    return { samples, idleMb, peakMb, stopped: false };
  } finally {
    await teardown.finish();
    delete process.env.NODEMESH_WORKERS;
    delete process.env.NODEMESH_SPLICE;
  }
}

async function main(): Promise<number> {
  if (!ARGS) return 0;
  if (!isRoot()) return 1;
  const t0 = Date.now();
  progress(`workers benchmark: ${SETTINGS.length} settings × ${ARGS.runs} runs × ${MEASURED.length} paths, ${ARGS.seconds} s per measurement`);
  const res = new Map<number, Awaited<ReturnType<typeof measure>>>();
  for (const w of SETTINGS) {
    const r = await measure(w, ARGS.runs, ARGS.seconds);
    if (r.stopped) return 130;
    res.set(w, r);
  }
  const med = (w: number, name: string, fn: (s: Sample) => number): number => median(res.get(w)!.samples.get(name)!.map(fn));
  const f = (x: number, n = 2): string => (Number.isFinite(x) ? x.toFixed(n) : '–');
  const lines = [
    '## Proxy workers: one proxy per agent against two',
    '',
    `Command: \`make bench\` (\`node dist/bench/workers.js\`; ${ARGS.runs} runs × ${ARGS.seconds} s per measurement, medians; the run took ${((Date.now() - t0) / 60000).toFixed(1)} min).`,
    `Machine: ${availableParallelism()} vCPU, kernel ${release()}, Node ${process.versions.node}. Measured ${new Date().toISOString().slice(0, 10)}.`,
    '',
    `The mesh bench's four nodes, brought up with \`NODEMESH_WORKERS=1\` and again with \`2\` (the main`,
    `thread's proxy and one worker thread, each with its own sockets in every pod's SO_REUSEPORT`,
    `groups), \`NODEMESH_SPLICE=off\` so that the proxies carry every same-node byte. iperf3 with`,
    `${STREAMS} parallel streams (\`-P ${STREAMS}\`), Gbit/s received in all; CPU: the path's agents' utime+stime per`,
    `second of the run, in cores. The load generators run on the same ${availableParallelism()} vCPUs as the agents.`,
    '',
    '| path | 1 proxy: Gbit/s | 2 proxies: Gbit/s | 2 / 1 | agent cores, 1 / 2 proxies | node-a agent\'s two busiest threads, 1 / 2 proxies | machine busy (of ' + availableParallelism() + '), 1 / 2 proxies |',
    '|---|---|---|---|---|---|---|',
    ...MEASURED.map((p) => {
      const g1 = med(1, p.name, (s) => s.gbps);
      const g2 = med(2, p.name, (s) => s.gbps);
      const both = (fn: (s: Sample) => number): string => `${f(med(1, p.name, fn))} / ${f(med(2, p.name, fn))}`;
      const agent = p.proxies.length > 0;
      return `| ${p.label} | ${f(g1)} | ${f(g2)} | ${f(g2 / g1)}× | ${agent ? both((s) => s.cores) : '–'} | ${agent ? `${f(med(1, p.name, (s) => s.threads[0]))}+${f(med(1, p.name, (s) => s.threads[1]))} / ${f(med(2, p.name, (s) => s.threads[0]))}+${f(med(2, p.name, (s) => s.threads[1]))}` : '–'} | ${both((s) => s.machine)} |`;
    }),
    '',
    `node-a's agent RSS, MB (idle after start-up / peak): 1 proxy ${f(res.get(1)!.idleMb, 1)} / ${f(res.get(1)!.peakMb, 1)}; 2 proxies ${f(res.get(2)!.idleMb, 1)} / ${f(res.get(2)!.peakMb, 1)}.`,
    '',
    'Raw runs (Gbit/s):',
    ...SETTINGS.flatMap((w) => MEASURED.map((p) => `- ${w} proxy(ies), ${p.label}: ${res.get(w)!.samples.get(p.name)!.map((s) => f(s.gbps)).join(', ')}${p.proxies.length ? `; iperf3 connections per proxy (node-a): ${res.get(w)!.samples.get(p.name)!.map((s) => s.perProxy.join('/') || '–').join(', ')}` : ''}`)),
  ];
  const section = lines.join('\n');
  if (ARGS.quick) {
    process.stdout.write(`\n${section}\n(--quick: docs/benchmarks.md not written)\n`);
    return 0;
  }
  const file = writeBenchSection('workers', section);
  process.stdout.write(`\n${section}\nwritten to ${file}\n`);
  return 0;
}

runMain('bench', main);
