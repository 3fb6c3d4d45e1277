// The L7 benchmark's section of docs/benchmarks.md: medians per path, ratios from the same run
// (to no mesh, to nginx as a reverse proxy, to sidecar mode) and issue 9's goals beside them.
import { spawnSync } from 'node:child_process';
import { cpus } from 'node:os';
import { L7_PATHS, type L7Path, type L7PathName, type L7Sample } from './l7-cluster.js';
import { NO_RUNTIME, type PathRuntime } from './runtime-probe.js';
import { median } from './tools.js';

/** Issue 9's goals for the L7 path. */
export const GOALS = { sameNode: 0.5, crossNode: 0.35, addedP50Us: 150 } as const;

export interface L7Row {
  h1: number;
  h2: number;
  p50: number;
  p90: number;
  p99: number;
  cpuH1: number;
  cpuH2: number;
  errors: number;
  /** Failed HTTP/2 requests over the runs (shown beside the HTTP/2 figure). */
  h2Errors: number;
  /** The agents' stalls during the latency run, each figure's median. */
  rt: PathRuntime;
}

const errorsOf = (x: L7Sample): number => x.h1.errors + (x.h2?.errors ?? 0) + x.lat.failed;

export function l7Rows(samples: Map<L7PathName, L7Sample[]>): Record<L7PathName, L7Row> {
  const row = (s: L7Sample[]): L7Row => {
    const m = (fn: (x: L7Sample) => number) => median(s.map(fn));
    return {
      h1: m((x) => x.h1.requestsPerSec),
      h2: m((x) => x.h2?.requestsPerSec ?? NaN),
      p50: m((x) => x.lat.p50),
      p90: m((x) => x.lat.p90),
      p99: m((x) => x.lat.p99),
      cpuH1: m((x) => x.cpuH1),
      cpuH2: m((x) => x.cpuH2),
      errors: s.reduce((a, x) => a + errorsOf(x), 0),
      h2Errors: s.reduce((a, x) => a + (x.h2?.errors ?? 0), 0),
      rt: Object.fromEntries(Object.keys(NO_RUNTIME).map((k) => [k, m((x) => (x.rt ?? NO_RUNTIME)[k as keyof PathRuntime])])) as unknown as PathRuntime,
    };
  };
  return Object.fromEntries(L7_PATHS.map((p) => [p.name, row(samples.get(p.name) ?? [])])) as Record<L7PathName, L7Row>;
}

const f = (x: number, n = 0): string => (Number.isFinite(x) ? x.toFixed(n) : '–');
const ratio = (a: number, b: number): number => (Number.isFinite(a) && Number.isFinite(b) && b !== 0 ? a / b : NaN);
const x = (r: number): string => (Number.isFinite(r) ? `${r.toFixed(2)}×` : '–');
const added = (a: number, b: number): string => (!Number.isFinite(a - b) ? '–' : a >= b ? `+${f(a - b)}` : `−${f(b - a)}`);
const direct = (p: L7Path): L7PathName => (p.side === 'same' ? 'direct-same' : 'direct-cross');
const nginx = (p: L7Path): L7PathName => (p.side === 'same' ? 'nginx-same' : 'nginx-cross');
const met = (ok: boolean): string => (ok ? '**met**' : '**not met**');

export interface L7ReportInput {
  rows: Record<L7PathName, L7Row>;
  samples: Map<L7PathName, L7Sample[]>;
  /** Paths whose HTTP/2 failed at warm-up, and curl's error. */
  h2Broken: Map<L7PathName, string>;
  runs: number;
  seconds: number;
  rate: number;
  minutes: number;
}

export function l7Section({ rows: R, samples, h2Broken, runs, seconds, rate, minutes }: L7ReportInput): string {
  const kernel = spawnSync('uname', ['-r'], { encoding: 'utf8' }).stdout.trim();
  const version = (argv: string[], re: RegExp) => re.exec(spawnSync(argv[0]!, argv.slice(1), { encoding: 'utf8' }).stdout ?? '')?.[1] ?? '?';
  const tools = `nginx ${version(['sh', '-c', 'nginx -v 2>&1'], /nginx\/([\d.]+)/)}, wrk ${version(['sh', '-c', 'wrk -v 2>&1'], /wrk (?:debian\/)?([\d.]+)/)}, h2load ${version(['h2load', '--version'], /nghttp2\/([\d.]+)/)}`;
  const h2Cell = (p: L7Path, r: L7Row) => (h2Broken.has(p.name) ? 'fails¹' : r.h2Errors ? `${f(r.h2)} (${r.h2Errors} failed)` : f(r.h2));
  const broken = [...h2Broken].map(([name, why]) => `${L7_PATHS.find((p) => p.name === name)!.label}: ${why.replace(/\|/g, '\\|')}`);
  const throughput = L7_PATHS.map((p) => {
    const r = R[p.name];
    const d = R[direct(p)];
    const n = R[nginx(p)];
    return `| ${p.label} | ${f(r.h1)} | ${x(ratio(r.h1, d.h1))} | ${x(ratio(r.h1, n.h1))} | ${h2Cell(p, r)} | ${x(ratio(r.h2, d.h2))} | ${x(ratio(r.h2, n.h2))} |`;
  });
  const latency = L7_PATHS.map((p) => {
    const r = R[p.name];
    const d = R[direct(p)];
    const isDirect = p.name === direct(p);
    const add = isDirect ? '–' : `${added(r.p50, d.p50)} / ${added(r.p90, d.p90)} / ${added(r.p99, d.p99)}`;
    const cpu = p.proxies.length ? `${f(r.cpuH1, 1)} / ${f(r.cpuH2, 1)}` : '–';
    return `| ${p.label} | ${f(r.p50)} / ${f(r.p90)} / ${f(r.p99)} | ${add} | ${cpu} |`;
  });
  const tails = L7_PATHS.filter((p) => p.proxies !== 'nginx' && p.proxies.length).map((p) => {
    const r = R[p.name];
    const t = r.rt;
    return `| ${p.label} | ${f(r.p99)} | ${f(t.loopP50Us)} / ${f(t.loopP99Us)} / ${f(t.loopMaxUs)} | ${f(t.gcCount)} (${f(t.majorGcs)} major) | ${f(t.gcTotalMs, 1)} / ${f(t.gcMaxMs, 2)} |`;
  });
  const vsSidecar = (label: string, a: L7PathName) => {
    const r = R[a];
    const s = R.sidecar;
    return `| ${label} | ${x(ratio(r.h1, s.h1))} | ${x(ratio(r.h2, s.h2))} | ${added(r.p50, s.p50)} µs | ${x(ratio(r.cpuH1, s.cpuH1))} |`;
  };
  const same = ratio(R['ambient-same'].h1, R['direct-same'].h1);
  const cross = ratio(R['ambient-cross'].h1, R['direct-cross'].h1);
  const addSame = R['ambient-same'].p50 - R['direct-same'].p50;
  const addCross = R['ambient-cross'].p50 - R['direct-cross'].p50;
  const nginxSame = ratio(R['nginx-same'].h1, R['direct-same'].h1);
  const nginxCross = ratio(R['nginx-cross'].h1, R['direct-cross'].h1);
  const raw = L7_PATHS.map((p) => {
    const s = samples.get(p.name) ?? [];
    const list = (fn: (v: L7Sample) => number, n = 0) => s.map((v) => f(fn(v), n)).join(', ');
    const errs = s.reduce((a, v) => a + errorsOf(v), 0);
    return `- ${p.label}: HTTP/1.1 req/s ${list((v) => v.h1.requestsPerSec)}; HTTP/2 req/s ${list((v) => v.h2?.requestsPerSec ?? NaN)}; p50 µs ${list((v) => v.lat.p50)}; p99 µs ${list((v) => v.lat.p99)}; errors ${errs}`;
  });
  const errs = L7_PATHS.filter((p) => R[p.name].errors > 0).map((p) => `${p.label}: ${R[p.name].errors}`);
  return `## L7: HTTP through the node proxies (ambient, sidecar mode, nginx as a reverse proxy)

Command: \`make bench\` (\`node dist/bench/l7.js\`; ${runs} runs × ${seconds} s per measurement, medians; the run took ${f(minutes, 1)} min).
Machine: ${cpus().length} vCPU (${cpus()[0]?.model ?? '?'}), shared and noisy, kernel ${kernel}, Node ${process.versions.node}, ${tools}. Measured ${new Date().toISOString().slice(0, 10)}.

**Setup.** The mesh benchmark's four simulated nodes and pods (above), with the servers' nginx
also listening on 8081 (HTTP/1.1) and 8082 (h2c, prior knowledge), both answering 1 KiB. Services
\`local\`, \`remote\` (namespace mesh) and \`server\` (namespace sidecar) target only those ports:
port 80 → 8081 with \`appProtocol: http\`, 82 → 8082 with \`kubernetes.io/h2c\`, so the proxies
terminate HTTP there, while 8080 (which the mesh benchmark measures) has no Service and stays L4.
*No mesh*: the plain client to a plain server's pod IP on 8081/8082. *Ambient L7*: the mesh
client to the Service VIP; the source node's proxy routes each request, the destination node's
proxy authorizes each request (no policy configured), in one process on the same node, over
HBONE across nodes. *Sidecar L7*: the same through the sidecar namespace, where each pod has a
proxy of its own, so every request crosses two proxies and mTLS. *nginx reverse proxy*: nginx
(one worker, \`proxy_pass\` to a keep-alive upstream of the plain server's 8081) in a plain pod
on the client's node, the native reference for one L7 hop; its HTTP/2 listeners speak h2c to the
client and HTTP/1.1 upstream. Before the runs every path is warmed up for 1 s, and each proxied
path is checked to be served at L7 (its agents' \`istio_requests_total\` grows).

**Throughput** (1 KiB responses; ratios to the path of the same placement, same node or cross
node, in the same run; sidecar mode is placed cross node):

| path | HTTP/1.1 req/s (wrk -t1 -c16, keep-alive) | × no mesh | × nginx RP | HTTP/2 req/s (h2load -c16 -m10, h2c) | × no mesh | × nginx RP |
|---|---|---|---|---|---|---|
${throughput.join('\n')}
${broken.length ? `\n¹ HTTP/2 failed at warm-up (curl --http2-prior-knowledge, tried twice), so it was not measured there: ${broken.join('; ')}.\n` : ''}
**Latency at ${rate.toLocaleString('en-US')} req/s and proxy CPU:**

| path | request time µs p50 / p90 / p99 | added over no mesh, µs p50 / p90 / p99 | proxy CPU ms per 1,000 req (HTTP/1.1 / HTTP/2) |
|---|---|---|---|
${latency.join('\n')}

Latency: \`h2load --h1 -c 16 --rps ${rate / 16} -r 1 --rate-period 1ms -n ${rate * seconds} --log-file …\`:
HTTP/1.1 GETs at ${rate} per second in all over 16 keep-alive connections, opened one per
millisecond so their request timers are staggered and requests arrive spread out, not 16 at
once; percentiles of every request's time from h2load's per-request log (µs; h2load's own
summary has no percentiles). wrk cannot hold a rate, wrk2 is not in Debian, and autocannon
(npm) both sends each connection's share of a second in a burst and records whole milliseconds.
CPU: the proxies' utime + stime (/proc) during the wrk and the h2load throughput runs, per
1,000 requests: both agents for ambient cross node and sidecar mode, nginx's master and worker
for the reverse proxy.

**Tails: the agents' stalls during the latency run.** Each agent's \`GET /debug/runtime\`
window, reset before the h2load rate run and read after it: event-loop delay (how late a timer
due every 10 ms ran; the worst of the path's agents) and V8's GC pauses (summed over them).

| path | request time p99 µs | event-loop delay µs p50 / p99 / max | GCs | GC pause ms total / max |
|---|---|---|---|---|
${tails.join('\n')}

**Against sidecar mode:**

| comparison | HTTP/1.1 req/s | HTTP/2 req/s | p50 | CPU per request |
|---|---|---|---|---|
${vsSidecar('ambient L7 same node / sidecar L7', 'ambient-same')}
${vsSidecar('ambient L7 cross node / sidecar L7', 'ambient-cross')}

**Issue 9's goals:**

| goal | this run | |
|---|---|---|
| L7 same node ≥ ${GOALS.sameNode}× no mesh (HTTP/1.1 req/s) | ${x(same)} (HTTP/2 ${x(ratio(R['ambient-same'].h2, R['direct-same'].h2))}; nginx RP ${x(nginxSame)}) | ${met(same >= GOALS.sameNode)} |
| L7 cross node ≥ ${GOALS.crossNode}× no mesh (HTTP/1.1 req/s) | ${x(cross)} (HTTP/2 ${x(ratio(R['ambient-cross'].h2, R['direct-cross'].h2))}; nginx RP ${x(nginxCross)}) | ${met(cross >= GOALS.crossNode)} |
| added p50 ≤ ${GOALS.addedP50Us} µs at ${rate} req/s, same node | ${added(R['ambient-same'].p50, R['direct-same'].p50)} µs | ${met(addSame <= GOALS.addedP50Us)} |
| added p50 ≤ ${GOALS.addedP50Us} µs at ${rate} req/s, cross node | ${added(R['ambient-cross'].p50, R['direct-cross'].p50)} µs | ${met(addCross <= GOALS.addedP50Us)} |

On this machine nginx itself, one native L7 hop, reaches ${x(nginxSame)} of no mesh on the same
node and ${x(nginxCross)} across nodes; ambient L7 reaches ${x(ratio(R['ambient-same'].h1, R['nginx-same'].h1))} and ${x(ratio(R['ambient-cross'].h1, R['nginx-cross'].h1))} of nginx.
${errs.length ? `\nErrors (wrk socket errors and non-2xx, h2load failed requests): ${errs.join('; ')}.\n` : '\nNo load generator reported an error or a non-2xx response.\n'}
Raw runs:
${raw.join('\n')}
`;
}
