// `make bench`: L4 benchmarks on simulated pods with real tools. In one run it measures the
// direct path (no mesh: neither pod enrolled) and the captured path (both pods enrolled:
// outbound and inbound through the node's shared proxy), and writes docs/benchmarks.md.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { agentPid, down, progress, startAgent } from '../cli/up.js';
import { cliPath, packageRoot } from '../cli/paths.js';
import { listPods, simUp } from '../sim/index.js';
import { replaceSection } from './sections.js';

const RUNS = Number(process.env.NODEMESH_BENCH_RUNS ?? 3);
const SECONDS = Number(process.env.NODEMESH_BENCH_SECONDS ?? 5);

const config = `
apiVersion: v1
kind: Namespace
metadata: { name: mesh, labels: { nodemesh.io/dataplane-mode: ambient } }
---
apiVersion: v1
kind: Namespace
metadata: { name: plain }
${['mesh', 'plain']
  .map(
    (ns) => `---
apiVersion: v1
kind: Pod
metadata: { name: server, namespace: ${ns} }
spec:
  containers:
  - name: iperf3
    command: [iperf3, -s, -p, "5201"]
    ports: [{ containerPort: 5201 }]
  - name: sockperf
    command: [sockperf, sr, --tcp, -i, 0.0.0.0, -p, "11111"]
    ports: [{ containerPort: 11111 }]
---
apiVersion: v1
kind: Pod
metadata: { name: client, namespace: ${ns} }
spec:
  containers:
  - name: idle
    command: [sleep, infinity]
`,
  )
  .join('')}`;

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

function exec(sd: string, pod: string, argv: string[]): string {
  const r = spawnSync(cliPath, ['sim', 'exec', '--state-dir', sd, pod, '--', ...argv], { encoding: 'utf8', timeout: (SECONDS + 30) * 1000, maxBuffer: 32 << 20 });
  if (r.status !== 0) throw new Error(`${argv.join(' ')} in ${pod} failed (exit ${r.status}): ${r.stderr}${r.stdout}`.slice(0, 2000));
  return r.stdout;
}

function iperf(sd: string, ns: string, ip: string): number {
  const j = JSON.parse(exec(sd, `${ns}/client`, ['iperf3', '-c', ip, '-p', '5201', '-t', String(SECONDS), '-J'])) as {
    end: { sum_received: { bits_per_second: number } };
  };
  return j.end.sum_received.bits_per_second / 1e9;
}

/** sockperf ping-pong, 1 KB messages at 1,000 msg/s: one-way latency percentiles in µs. */
function sockperf(sd: string, ns: string, ip: string): { p50: number; p99: number } {
  const out = exec(sd, `${ns}/client`, ['sockperf', 'pp', '--tcp', '-i', ip, '-p', '11111', '-m', '1024', '--mps', '1000', '-t', String(SECONDS)]);
  const pct = (p: string): number => {
    const m = new RegExp(`percentile ${p}\\s*=\\s*([\\d.]+)`).exec(out);
    if (!m) throw new Error(`sockperf printed no ${p} percentile:\n${out.slice(-800)}`);
    return Number(m[1]);
  };
  return { p50: pct('50.000'), p99: pct('99.000') };
}

function rssMb(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : NaN;
}

function cpuSeconds(pid: number): number {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return (Number(f[11]) + Number(f[12])) / 100; // utime + stime, in clock ticks of 1/100 s
}

async function main(): Promise<number> {
  const sd = mkdtempSync(join(tmpdir(), 'nm-bench-'));
  const dir = mkdtempSync(join(tmpdir(), 'nm-bench-cfg-'));
  writeFileSync(join(dir, 'pods.yaml'), config);
  progress(`benchmark: ${RUNS} runs of ${SECONDS} s per measurement (NODEMESH_BENCH_RUNS, NODEMESH_BENCH_SECONDS)`);
  await startAgent(dir, sd, ['--pin-root', '/sys/fs/bpf/nodemesh-bench']);
  try {
    await simUp(dir, { stateDir: sd, onProgress: (l) => progress(l) });
    const ips = new Map((await listPods({ stateDir: sd })).map((p) => [`${p.namespace}/${p.name}`, p.ip]));
    const pid = agentPid(sd)!;
    const idleRss = rssMb(pid);
    const res: Record<'plain' | 'mesh', { gbps: number[]; p50: number[]; p99: number[]; cpu: number[] }> = {
      plain: { gbps: [], p50: [], p99: [], cpu: [] },
      mesh: { gbps: [], p50: [], p99: [], cpu: [] },
    };
    let peakRss = idleRss;
    for (let run = 1; run <= RUNS; run++) {
      // Alternate the order so neither path always runs on a warmer machine.
      for (const ns of run % 2 ? (['plain', 'mesh'] as const) : (['mesh', 'plain'] as const)) {
        const ip = ips.get(`${ns}/server`)!;
        progress(`run ${run}/${RUNS} ${ns === 'plain' ? 'direct  ' : 'captured'}: iperf3 + sockperf`);
        const c0 = cpuSeconds(pid);
        res[ns].gbps.push(iperf(sd, ns, ip));
        const l = sockperf(sd, ns, ip);
        res[ns].p50.push(l.p50);
        res[ns].p99.push(l.p99);
        res[ns].cpu.push(cpuSeconds(pid) - c0);
        peakRss = Math.max(peakRss, rssMb(pid));
      }
    }
    const d = { gbps: median(res.plain.gbps), p50: median(res.plain.p50), p99: median(res.plain.p99) };
    const m = { gbps: median(res.mesh.gbps), p50: median(res.mesh.p50), p99: median(res.mesh.p99) };
    const f = (x: number, n = 1) => x.toFixed(n);
    const kernel = spawnSync('uname', ['-r'], { encoding: 'utf8' }).stdout.trim();
    const table = [
      '| path | iperf3 Gbit/s (1 stream) | sockperf p50 µs | sockperf p99 µs |',
      '|---|---|---|---|',
      `| direct (no mesh) | ${f(d.gbps, 2)} | ${f(d.p50)} | ${f(d.p99)} |`,
      `| captured (ambient, 2 proxy hops) | ${f(m.gbps, 2)} | ${f(m.p50)} | ${f(m.p99)} |`,
      `| **ratio captured / direct** | **${f(m.gbps / d.gbps, 2)}×** | **${f(m.p50 / d.p50, 2)}×** (+${f(m.p50 - d.p50)} µs) | **${f(m.p99 / d.p99, 2)}×** (+${f(m.p99 - d.p99)} µs) |`,
    ].join('\n');
    const section = `## L4 capture: direct vs captured (same node)

Command: \`make bench\` (\`node dist/bench/main.js\`, ${RUNS} runs × ${SECONDS} s, medians).
Machine: ${process.env.NODEMESH_BENCH_MACHINE ?? '2 vCPU, shared and noisy'}, kernel ${kernel}, Node ${process.versions.node}. Measured ${new Date().toISOString().slice(0, 10)}.

Two pods per path on one simulated node (CNI bridge). *Direct*: neither pod enrolled.
*Captured*: both enrolled, so a connection crosses the shared proxy twice (outbound 15001 in
the client's netns, inbound 15006 in the server's), as ambient same-node traffic does before
the in-process fast path. Latency: \`sockperf pp --tcp -m 1024 --mps 1000\` (one-way, 1 KB
at 1,000 msg/s). Throughput: \`iperf3 -c … -t ${SECONDS}\`, one stream.

${table}

Agent memory: ${f(idleRss)} MB RSS idle with 2 enrolled pods, ${f(peakRss)} MB peak during the runs.
Agent CPU per captured run (iperf3 ${SECONDS} s + sockperf ${SECONDS} s): median ${f(median(res.mesh.cpu), 2)} s.

Raw runs (direct / captured): Gbit/s ${res.plain.gbps.map((x) => f(x, 2)).join(', ')} / ${res.mesh.gbps.map((x) => f(x, 2)).join(', ')};
p50 µs ${res.plain.p50.map((x) => f(x)).join(', ')} / ${res.mesh.p50.map((x) => f(x)).join(', ')};
p99 µs ${res.plain.p99.map((x) => f(x)).join(', ')} / ${res.mesh.p99.map((x) => f(x)).join(', ')}.

Not yet measured here: sidecar mode (one proxy per pod) — the sidecar harness comes with the
HBONE work; until then the ratio against sidecar mode is not reported.
`;
    const file = join(packageRoot, 'docs', 'benchmarks.md');
    writeFileSync(file, replaceSection(existsSync(file) ? readFileSync(file, 'utf8') : undefined, 'l4', `Figures are medians of ${RUNS} runs on a shared, noisy machine: read them as orders of magnitude.\n\n${section}`));
    process.stdout.write(`\n${table}\n\nagent RSS ${f(idleRss)} MB idle, ${f(peakRss)} MB peak\nwritten to ${file}\n`);
    return 0;
  } finally {
    await down(sd, '/sys/fs/bpf/nodemesh-bench');
  }
}

main().then(
  (c) => (process.exitCode = c),
  (e: unknown) => {
    process.stderr.write(`bench failed: ${(e as Error).stack ?? String(e)}\n`);
    process.exitCode = 1;
  },
);
