// `make bench` (mesh): the data path's cost, in one run, on simulated nodes with real load
// generators run inside pods. Six paths between a client pod and a server pod:
//   direct, same node        neither pod in the mesh, one node
//   direct, cross node       neither pod in the mesh, two nodes
//   ambient, same node       both in the mesh on one node: one shared proxy, in-process fast path
//   ambient, cross node      both in the mesh on two nodes: two shared proxies, HBONE (mTLS)
//   sidecar                  one proxy per pod: each pod alone on its node with its own agent,
//                            so every connection crosses two proxies and mTLS, as with sidecars
//   haproxy sidecars         the native reference (haproxy.ts): the no-mesh cross-node pods, each
//                            with a Debian haproxy in its netns, mutual TLS between the two
// For each: iperf3 throughput (1 stream), sockperf latency at 1,000 msg/s of 1 KB over 4 and 16
// connections, wrk connections per second (Connection: close) and requests per second
// (keep-alive), proxy CPU per 1,000 requests, proxy memory, and the proxies' event-loop delay
// and GC pauses during the latency runs. Writes its section of docs/benchmarks.md. Without
// haproxy installed it says so and skips that path.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { progress, up } from '../cluster/index.js';
import { HAPROXY_PATH, haproxyMissing, HaproxySidecars } from './haproxy.js';
import { BenchCluster, NODES, PATHS, SOCKPERF_BASE, writeBenchConfig, type PathDef, type PathName } from './pods.js';
import { currentRun, MESH_TITLE, meshResults, type MeshRow } from './results-build.js';
import { MeshTeardown, runMain, writeBenchSection } from './run.js';
import { RuntimeProbe, type PathRuntime } from './runtime-probe.js';
import { BENCH_OPTIONS_HELP, cpuSeconds, median, parseBenchArgs, parseSockperf, rssMb, type SockperfResult, isRoot } from './tools.js';

const HELP = `Usage: node dist/bench/mesh.js [--quick] [--runs N] [--seconds S]

The data path's cost: brings up four simulated nodes and measures six paths (no mesh same and
cross node, ambient same node, ambient cross node over HBONE, sidecar mode, and haproxy-sidecar:
a Debian haproxy in each of the no-mesh cross-node pods, mutual TLS between them, as a stand-in
for Envoy or Linkerd sidecars) with real load generators inside the pods: iperf3 throughput,
sockperf latency at 1,000 msg/s over 4 and 16 connections, wrk connections and requests per
second, proxy CPU and memory. Medians over the runs, ratios from the same run (ambient and
sidecar mode against no mesh and against the haproxy sidecars); writes the mesh section of
docs/benchmarks.md. Needs root; without haproxy (Debian package haproxy) that path is skipped.

${BENCH_OPTIONS_HELP}`;
const ARGS = parseBenchArgs(HELP);
const RUNS = ARGS?.runs ?? 0;
const SECONDS = ARGS?.seconds ?? 0;
const RATE = 1000;
const CONNS = [4, 16] as const;
const SECTION = 'mesh';

interface Sample {
  gbps: number;
  lat: Record<number, SockperfResult>;
  /** The path's proxies' event-loop delay and GC during each latency run. */
  rt: Record<number, PathRuntime>;
  connsPerSec: number;
  reqsPerSec: number;
  errors: number;
  /** Proxy CPU seconds per 1,000 messages of the 16-connection latency run. */
  cpuPer1k: number;
}

type MeshPath = PathDef<PathName | typeof HAPROXY_PATH.name>;
type MeshPathName = MeshPath['name'];

class Bench extends BenchCluster {
  probe!: RuntimeProbe;
  haproxy?: HaproxySidecars;

  /** The path's proxies: the agents, or the haproxy sidecars. */
  override pids(p: MeshPath): number[] {
    return p.name === HAPROXY_PATH.name ? (this.haproxy?.pids() ?? []) : super.pids(p);
  }

  /** Every proxy's PID by the memory table's key: each node's agent, each haproxy sidecar. */
  proxyPids(): Record<string, number> {
    const out = Object.fromEntries(NODES.map((n) => [n, this.agentPid(n)]));
    for (const side of ['client', 'server'] as const) {
      const pid = this.haproxy?.pid(side);
      if (pid) out[`haproxy-${side}`] = pid;
    }
    return out;
  }

  sample(p: MeshPath): Sample {
    const ip = this.target(p);
    const gbps = this.iperf(p);
    const lat: Record<number, SockperfResult> = {};
    const rt: Record<number, PathRuntime> = {};
    let cpuPer1k = NaN;
    for (const n of CONNS) {
      const feed = join(this.dir, `feed-${p.name}-${n}`);
      writeFileSync(feed, Array.from({ length: n }, (_, i) => `T:${ip}:${SOCKPERF_BASE + i}`).join('\n') + '\n');
      const pids = this.pids(p);
      this.probe.reset(p.proxies);
      const c0 = pids.reduce((a, pid) => a + cpuSeconds(pid), 0);
      lat[n] = parseSockperf(this.exec(p.client, ['sockperf', 'ul', '-f', feed, '-F', 'e', '-m', '1024', '--mps', String(RATE), '--reply-every', '1', '-t', String(SECONDS), '--full-rtt']));
      if (pids.length) cpuPer1k = (pids.reduce((a, pid) => a + cpuSeconds(pid), 0) - c0) / (lat[n]!.sent / 1000);
      else cpuPer1k = 0;
      rt[n] = this.probe.read(p.proxies);
    }
    const close = this.wrk(p, 4, false);
    const keep = this.wrk(p, 16, true);
    return { gbps, lat, rt, connsPerSec: close.requestsPerSec, reqsPerSec: keep.requestsPerSec, errors: close.errors + keep.errors, cpuPer1k };
  }
}

const f = (x: number, n = 1): string => (Number.isFinite(x) ? x.toFixed(n) : '–');
/** A latency difference in words: "add 12 µs", or "are 40 µs below" when the mesh path came out lower. */
const added = (d: number): string => (!Number.isFinite(d) ? 'add –' : d >= 0 ? `add ${d.toFixed(0)} µs` : `are ${(-d).toFixed(0)} µs below`);
const ratio = (a: number, b: number): string => (Number.isFinite(a) && Number.isFinite(b) && b !== 0 ? `${(a / b).toFixed(2)}×` : '–');

async function main(): Promise<number> {
  if (!ARGS) return 0;
  if (!isRoot()) return 1;
  const sd = mkdtempSync(join(tmpdir(), 'nm-bench-mesh-'));
  const dir = mkdtempSync(join(tmpdir(), 'nm-bench-mesh-cfg-'));
  writeBenchConfig(dir);
  const t0 = Date.now();
  const missing = haproxyMissing();
  if (missing) progress(missing);
  const paths: MeshPath[] = missing ? PATHS : [...PATHS, HAPROXY_PATH];
  progress(`mesh benchmark: ${paths.length} paths × ${RUNS} runs, ${SECONDS} s per measurement (NODEMESH_BENCH_RUNS, NODEMESH_BENCH_SECONDS)`);
  const haproxy = missing ? undefined : new HaproxySidecars();
  const teardown = new MeshTeardown('bench', sd, [dir], () => haproxy?.stop());
  try {
    await up(dir, sd);
    const b = new Bench(sd, dir, SECONDS);
    await b.refresh();
    b.probe = new RuntimeProbe(sd);
    if (haproxy) {
      progress(`${HAPROXY_PATH.label}: starting haproxy in ${HAPROXY_PATH.client} and ${HAPROXY_PATH.server} (certificates in ${haproxy.dir})`);
      haproxy.start((pod, argv) => b.exec(pod, argv), b.ip(HAPROXY_PATH.server));
      b.haproxy = haproxy;
    }
    const idle = Object.fromEntries(Object.entries(b.proxyPids()).map(([k, pid]) => [k, rssMb(pid)]));
    const peak = { ...idle };
    const samples = new Map<MeshPathName, Sample[]>(paths.map((p) => [p.name, []]));
    for (let run = 1; run <= RUNS; run++) {
      // Rotate the order so no path always runs first (on a cooler or warmer machine).
      const order = paths.map((_, i) => paths[(i + run - 1) % paths.length]!);
      for (const p of order) {
        // The measurements block the event loop: let a SIGINT or SIGTERM sent to this process
        // alone (Ctrl-C reaches the load generators too, and fails the measurement) start the
        // teardown between paths, and stop here then.
        await new Promise((r) => setImmediate(r));
        if (teardown.stopping) return 130;
        progress(`run ${run}/${RUNS}: ${p.label}: iperf3, sockperf ×${CONNS.length}, wrk ×2`);
        samples.get(p.name)!.push(b.sample(p));
        for (const [k, pid] of Object.entries(b.proxyPids())) peak[k] = Math.max(peak[k]!, rssMb(pid));
      }
    }
    const med = (name: MeshPathName, fn: (s: Sample) => number) => median(samples.get(name)!.map(fn));
    const row = (p: MeshPath): Row => {
      const m = (fn: (s: Sample) => number) => med(p.name, fn);
      return {
        gbps: m((s) => s.gbps),
        l4: { p50: m((s) => s.lat[4]!.p50), p90: m((s) => s.lat[4]!.p90), p99: m((s) => s.lat[4]!.p99) },
        l16: { p50: m((s) => s.lat[16]!.p50), p90: m((s) => s.lat[16]!.p90), p99: m((s) => s.lat[16]!.p99) },
        rt: Object.fromEntries(CONNS.map((n) => [n, medRuntime(samples.get(p.name)!.map((s) => s.rt[n]!))])) as Record<number, PathRuntime>,
        cps: m((s) => s.connsPerSec),
        rps: m((s) => s.reqsPerSec),
        cpu: m((s) => s.cpuPer1k),
        errors: samples.get(p.name)!.reduce((a, s) => a + s.errors, 0),
      };
    };
    const R = Object.fromEntries(paths.map((p) => [p.name, row(p)])) as Rows;
    const section = report(paths, R, idle, peak, (Date.now() - t0) / 1000, samples, missing);
    if (ARGS.quick) {
      process.stdout.write(`\n${section}\n(--quick: docs/benchmarks.md not written)\n`);
      return 0;
    }
    const file = writeBenchSection(SECTION, section, meshResults(R, currentRun('dist/bench/mesh.js', RUNS, SECONDS)));
    process.stdout.write(`\n${section}\nwritten to ${file}\n`);
    return 0;
  } finally {
    await teardown.finish();
  }
}

/** Each figure's median over the runs. */
function medRuntime(xs: PathRuntime[]): PathRuntime {
  const keys = Object.keys(xs[0]!) as Array<keyof PathRuntime>;
  return Object.fromEntries(keys.map((k) => [k, median(xs.map((x) => x[k]))])) as unknown as PathRuntime;
}

/** A path's medians: the JSON's figures (MeshRow), the proxies' stalls and wrk's errors. */
interface Row extends MeshRow {
  rt: Record<number, PathRuntime>;
  errors: number;
}
type Rows = Record<PathName, Row> & Partial<Record<typeof HAPROXY_PATH.name, Row>>;
const NONE: Pick<Row, 'gbps' | 'l16' | 'cps' | 'rps'> = { gbps: NaN, l16: { p50: NaN, p90: NaN, p99: NaN }, cps: NaN, rps: NaN };
/** Whether the path crosses a proxy (so has a CPU figure). */
const proxied = (p: MeshPath): boolean => p.proxies.length > 0 || p.name === HAPROXY_PATH.name;

function report(paths: MeshPath[], R: Rows, idle: Record<string, number>, peak: Record<string, number>, seconds: number, samples: Map<MeshPathName, Sample[]>, skipped: string | undefined): string {
  const kernel = spawnSync('uname', ['-r'], { encoding: 'utf8' }).stdout.trim();
  const lines = paths.map((p) => {
    const r = R[p.name]!;
    return `| ${p.label} | ${f(r.gbps, 2)} | ${f(r.l4.p50)} / ${f(r.l4.p90)} / ${f(r.l4.p99)} | ${f(r.l16.p50)} / ${f(r.l16.p90)} / ${f(r.l16.p99)} | ${f(r.cps, 0)} | ${f(r.rps, 0)} | ${proxied(p) ? f(r.cpu, 3) : '–'} |`;
  });
  if (skipped) lines.push(`| ${HAPROXY_PATH.label} | skipped: haproxy is not installed | | | | | |`);
  const add = (a: number, b: number) => (!Number.isFinite(a - b) ? '–' : a >= b ? `+${f(a - b, 0)}` : `−${f(b - a, 0)}`);
  const vs = (name: string, a: MeshPathName, b: MeshPathName) => {
    const x = R[a] ?? NONE;
    const y = R[b] ?? NONE;
    return `| ${name} | ${ratio(x.gbps, y.gbps)} | ${ratio(x.l16.p50, y.l16.p50)} (${add(x.l16.p50, y.l16.p50)} µs) | ${ratio(x.l16.p90, y.l16.p90)} (${add(x.l16.p90, y.l16.p90)} µs) | ${ratio(x.l16.p99, y.l16.p99)} (${add(x.l16.p99, y.l16.p99)} µs) | ${ratio(x.cps, y.cps)} | ${ratio(x.rps, y.rps)} |`;
  };
  const raw = paths.map((p) => {
    const s = samples.get(p.name)!;
    return `- ${p.label}: Gbit/s ${s.map((x) => f(x.gbps, 2)).join(', ')}; p99 µs @16 ${s.map((x) => f(x.lat[16]!.p99)).join(', ')}; conn/s ${s.map((x) => f(x.connsPerSec, 0)).join(', ')}; req/s ${s.map((x) => f(x.reqsPerSec, 0)).join(', ')}; errors ${s.reduce((a, x) => a + x.errors, 0)}`;
  });
  const tails = paths.filter((p) => p.proxies.length).flatMap((p) =>
    CONNS.map((n) => {
      const r = R[p.name]!;
      const t = r.rt[n]!;
      const p99 = n === 4 ? r.l4.p99 : r.l16.p99;
      return `| ${p.label} | ${n} | ${f(p99, 0)} | ${f(t.loopP50Us, 0)} / ${f(t.loopP99Us, 0)} / ${f(t.loopMaxUs, 0)} | ${f(t.gcCount, 0)} (${f(t.majorGcs, 0)} major) | ${f(t.gcTotalMs, 1)} / ${f(t.gcMaxMs, 2)} |`;
    }),
  );
  const errs = paths.filter((p) => R[p.name]!.errors > 0).map((p) => `${p.label}: ${R[p.name]!.errors}`);
  const mem = (k: string) => `${f(idle[k] ?? NaN)} | ${f(peak[k] ?? NaN)}`;
  const hx = R[HAPROXY_PATH.name];
  return `## ${MESH_TITLE}

Command: \`make bench\` (\`node dist/bench/mesh.js\`; ${RUNS} runs × ${SECONDS} s per measurement, medians; the run took ${f(seconds / 60, 1)} min).
Machine: ${cpus().length} vCPU (${cpus()[0]?.model ?? '?'}), shared and noisy, kernel ${kernel}, Node ${process.versions.node}. Measured ${new Date().toISOString().slice(0, 10)}.

**Setup.** \`nodemesh up\` on four simulated nodes (network namespaces joined by the cluster
network), the control plane on the cluster network, one agent per node. Clients and servers
are pods; the load generators run inside the client pods. Servers run \`iperf3 -s\`,
\`sockperf sr\` on ${Math.max(...CONNS)} ports and nginx answering 1 KiB.
*No mesh*: pods in a namespace without the ambient label. *Ambient, same node*: one shared
proxy, the in-process hand-off (no TLS). *Ambient, cross node*: the source node's proxy, HBONE
(mTLS 1.3, HTTP/2 CONNECT) to the destination node's proxy. *Sidecar*: one proxy per pod,
modelled by putting each pod alone on a node with its own agent, so every connection crosses
two proxies and mTLS, as with Envoy sidecars, whichever node the pods are on.
*haproxy sidecars*: the native reference, a sidecar mesh built from a proxy users would pick
instead (standing in for Envoy or Linkerd sidecars): the no-mesh cross-node pods, each with a
Debian haproxy${haproxyVersion()} in its netns, \`mode tcp\`, \`nbthread 1\`, no logging. The client's
listens on loopback on the server's ports (the load generators dial 127.0.0.1) and opens one
TLS 1.3 connection per connection (verify required, a client certificate, ECDSA P-256 from a
throwaway CA) to the server's, which requires the client certificate and forwards in
plaintext to the app on 127.0.0.1. No capture: the app dials its sidecar explicitly.

| path | iperf3 Gbit/s (1 stream) | RTT µs p50 / p90 / p99, 4 conns | RTT µs p50 / p90 / p99, 16 conns | conn/s (wrk -c4, Connection: close) | req/s (wrk -c16, keep-alive) | proxy CPU s per 1,000 req |
|---|---|---|---|---|---|---|
${lines.join('\n')}

Latency: \`sockperf ul -m 1024 --mps ${RATE} --reply-every 1 --full-rtt\` over 4 and over 16
connections (one per server port, so every reply is observed): 1 KiB request/response at
${RATE} per second in all, Istio's published conditions; round-trip times. CPU: the proxies'
utime+stime during the 16-connection run, per 1,000 request/responses (both proxies for the
cross-node and both sidecar paths; the two haproxy processes for the haproxy sidecars).

**Ratios** (16 connections for latency):

| comparison | throughput | p50 | p90 | p99 | conn/s | req/s |
|---|---|---|---|---|---|---|
${vs('ambient same node / no mesh same node', 'ambient-same', 'direct-same')}
${vs('ambient cross node / no mesh cross node', 'ambient-cross', 'direct-cross')}
${vs('sidecar / no mesh cross node', 'sidecar', 'direct-cross')}
${vs('haproxy sidecar / no mesh cross node', HAPROXY_PATH.name, 'direct-cross')}
${vs('ambient same node / sidecar', 'ambient-same', 'sidecar')}
${vs('ambient cross node / sidecar', 'ambient-cross', 'sidecar')}
${vs('ambient same node / haproxy sidecar', 'ambient-same', HAPROXY_PATH.name)}
${vs('ambient cross node / haproxy sidecar', 'ambient-cross', HAPROXY_PATH.name)}
${vs('nodemesh sidecar / haproxy sidecar', 'sidecar', HAPROXY_PATH.name)}

For reference, Istio reports that two ztunnels add about 170 µs at p90 and 200 µs at p99 at
1,000 rps; here two nodemesh proxies (ambient cross node) ${added(R['ambient-cross'].l16.p90 - R['direct-cross'].l16.p90)} at p90 and
${added(R['ambient-cross'].l16.p99 - R['direct-cross'].l16.p99)} at p99 over the same path without a mesh${hx ? `, and two haproxy sidecars ${added(hx.l16.p90 - R['direct-cross'].l16.p90)} and ${added(hx.l16.p99 - R['direct-cross'].l16.p99)}` : ''}. (A p99 below the no-mesh path's means that path's
p99 had an outlier in the median run: the no-mesh tail on this shared machine is noisy.)

**Tails: the proxies' stalls during the latency runs.** Each agent's \`GET /debug/runtime\`
window, reset before the sockperf run and read after it: event-loop delay (how late a timer
due every 10 ms ran; the worst of the path's proxies) and V8's GC pauses (summed over the
path's proxies). Medians over the runs. (haproxy has neither.)

| path | conns | RTT p99 µs | event-loop delay µs p50 / p99 / max | GCs | GC pause ms total / max |
|---|---|---|---|---|---|
${tails.join('\n')}

**Proxy memory** (RSS, MB; idle after start-up and sync / peak during the runs):

| proxy | pods it serves | idle | peak |
|---|---|---|---|
| ambient, node-a's agent | 2 mesh pods (and 2 outside the mesh) | ${mem('node-a')} |
| ambient, node-b's agent | 1 mesh pod (and 1 outside) | ${mem('node-b')} |
| sidecar, client's proxy | 1 | ${mem('node-c')} |
| sidecar, server's proxy | 1 | ${mem('node-d')} |
| haproxy sidecar, client's | 1 | ${mem('haproxy-client')} |
| haproxy sidecar, server's | 1 | ${mem('haproxy-server')} |

In sidecar mode every pod pays a proxy: a node with *P* mesh pods holds about
*P* × ${f(median([idle['node-c']!, idle['node-d']!]))} MB of proxies idle${hx ? ` (*P* × ${f(median([idle['haproxy-client']!, idle['haproxy-server']!]))} MB with haproxy sidecars)` : ''}; ambient holds one agent whatever *P*.
${skipped ? `\n${skipped}.\n` : ''}${errs.length ? `\nErrors reported by wrk (connect/read/write/timeout or non-2xx): ${errs.join('; ')}.\n` : '\nwrk reported no socket errors and no non-2xx responses.\n'}
Raw runs:
${raw.join('\n')}
`;
}

/** ` 2.6.12`, from `haproxy -v` (empty without haproxy). */
function haproxyVersion(): string {
  const out = spawnSync('haproxy', ['-v'], { encoding: 'utf8' }).stdout ?? '';
  const v = /version (\S+)/.exec(out)?.[1]?.replace(/-.*/, '');
  return v ? ` ${v}` : '';
}

runMain('bench', main);
