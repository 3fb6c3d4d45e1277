// `make bench` (L7): issue 9's L7 goals in one run on simulated nodes, real load generators in
// the pods. Seven paths from a client pod to nginx answering 1 KiB: no mesh, ambient L7 and
// nginx as a reverse proxy, each same node and cross node, and sidecar-mode L7. For each:
// HTTP/1.1 req/s (wrk -c16), HTTP/2 req/s (h2load, h2c), request times at 1,000 req/s, proxy
// CPU per 1,000 requests, the agents' event-loop delay and GC during the latency run; ratios
// from the same run. Writes the L7 section of docs/benchmarks.md.
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { progress, up } from '../cluster/index.js';
import { L7Cluster, L7_PATHS, writeL7BenchConfig, type L7Path, type L7PathName, type L7Sample } from './l7-cluster.js';
import { l7Rows, l7Section } from './l7-report.js';
import { currentRun, l7Results } from './results-build.js';
import { MeshTeardown, runMain, writeBenchSection } from './run.js';
import { RuntimeProbe } from './runtime-probe.js';
import { BENCH_OPTIONS_HELP, parseBenchArgs, isRoot } from './tools.js';

const HELP = `Usage: node dist/bench/l7.js [--quick] [--runs N] [--seconds S]

Issue 9's L7 goals: brings up four simulated nodes and measures HTTP to nginx (1 KiB) on seven
paths: no mesh, ambient L7 (through an HTTP Service) and nginx as a reverse proxy, each same
node and cross node, and sidecar-mode L7. wrk -c16 HTTP/1.1 req/s, h2load HTTP/2 req/s, request
times p50/p90/p99 at 1,000 req/s over 16 connections (h2load), proxy CPU per 1,000 requests;
ratios to no mesh, to nginx and to sidecar mode from the same run, and the goals met or not.
Medians over the runs; writes the L7 section of docs/benchmarks.md. Needs root, nghttp2-client.

${BENCH_OPTIONS_HELP}`;
const ARGS = parseBenchArgs(HELP);
const RUNS = ARGS?.runs ?? 0;
const SECONDS = ARGS?.seconds ?? 0;
const RATE = 1000;
const SECTION = 'l7';

/**
 * A 1 s wrk per path (pools, HBONE, JIT warm) and proof that each proxied path is served at L7.
 * Answers why HTTP/2 does not work on the path (one curl, tried twice), or undefined when it does.
 */
async function warmUp(b: L7Cluster, p: L7Path): Promise<string | undefined> {
  const nodes = p.proxies === 'nginx' ? [] : p.proxies;
  const before = await Promise.all(nodes.map((n) => b.l7Requests(n)));
  b.wrkH1(p, 1);
  const after = await Promise.all(nodes.map((n) => b.l7Requests(n)));
  nodes.forEach((n, i) => {
    if (after[i]! <= before[i]!) throw new Error(`${p.label}: ${n}'s agent counted no HTTP request, so the path is not served at L7`);
  });
  let why: string | undefined;
  for (let i = 0; i < 2; i++) {
    try {
      b.exec(p.client, ['curl', '-sS', '-f', '-o', '/dev/null', '-m', '5', '--http2-prior-knowledge', b.url(p, true)]);
      why = undefined;
      break;
    } catch (err) {
      why = /curl: \(\d+\)[^\n]*/.exec((err as Error).message)?.[0] ?? (err as Error).message.split('\n')[0]!;
    }
  }
  b.assertAlive(p);
  return why;
}

function sample(b: L7Cluster, probe: RuntimeProbe, p: L7Path, run: number, h2Broken: boolean): L7Sample {
  const at = `run ${run}/${RUNS}: ${p.label}:`;
  progress(`${at} wrk -c16 HTTP/1.1`);
  const h1 = b.sampleH1(p);
  let h2: ReturnType<L7Cluster['sampleH2']> | undefined;
  if (h2Broken) progress(`${at} HTTP/2 skipped (it failed at warm-up)`);
  else {
    progress(`${at} h2load -c16 -m10 HTTP/2`);
    h2 = b.sampleH2(p);
  }
  progress(`${at} h2load ${RATE} req/s latency`);
  const agents = p.proxies === 'nginx' ? [] : p.proxies;
  probe.reset(agents);
  const lat = b.latency(p, RATE);
  const rt = probe.read(agents);
  b.assertAlive(p);
  return { h1: h1.r, ...(h2 ? { h2: h2.r } : {}), lat, rt, cpuH1: h1.cpu, cpuH2: h2?.cpu ?? NaN };
}

async function main(): Promise<number> {
  if (!ARGS) return 0;
  if (!isRoot()) return 1;
  const sd = mkdtempSync(join(tmpdir(), 'nm-bench-l7-'));
  const dir = mkdtempSync(join(tmpdir(), 'nm-bench-l7-cfg-'));
  writeL7BenchConfig(dir);
  const t0 = Date.now();
  progress(`L7 benchmark: ${L7_PATHS.length} paths × ${RUNS} runs × 3 measurements, ${SECONDS} s each (NODEMESH_BENCH_RUNS, NODEMESH_BENCH_SECONDS)`);
  const teardown = new MeshTeardown('bench', sd, [dir]);
  try {
    await up(dir, sd);
    const b = new L7Cluster(sd, dir, SECONDS);
    await b.refresh();
    await b.startReverseProxy();
    const probe = new RuntimeProbe(sd);
    const h2Broken = new Map<L7PathName, string>();
    for (const p of L7_PATHS) {
      progress(`warm-up: ${p.label}: wrk 1 s${p.proxies === 'nginx' || p.proxies.length === 0 ? '' : ', L7 check'}, curl HTTP/2`);
      const why = await warmUp(b, p);
      if (why) {
        h2Broken.set(p.name, why);
        progress(`warm-up: ${p.label}: HTTP/2 fails (${why}); not measured on this path`);
      }
    }
    const samples = new Map<L7PathName, L7Sample[]>(L7_PATHS.map((p) => [p.name, []]));
    for (let run = 1; run <= RUNS; run++) {
      // Rotate the order so no path always runs first (on a cooler or warmer machine).
      const order = L7_PATHS.map((_, i) => L7_PATHS[(i + run - 1) % L7_PATHS.length]!);
      for (const p of order) samples.get(p.name)!.push(sample(b, probe, p, run, h2Broken.has(p.name)));
    }
    const section = l7Section({ rows: l7Rows(samples), samples, h2Broken, runs: RUNS, seconds: SECONDS, rate: RATE, minutes: (Date.now() - t0) / 60_000 });
    if (ARGS.quick) {
      process.stdout.write(`\n${section}\n(--quick: docs/benchmarks.md not written)\n`);
      return 0;
    }
    const file = writeBenchSection(SECTION, section, l7Results(l7Rows(samples), currentRun('dist/bench/l7.js', RUNS, SECONDS), new Set(h2Broken.keys())));
    process.stdout.write(`\n${section}\nwritten to ${file}\n`);
    return 0;
  } finally {
    await teardown.finish();
  }
}

runMain('bench', main);
