// What the benchmarks share: medians, a process's memory and CPU from /proc, and the parsers
// for the real load generators' output (iperf3 -J, sockperf, wrk).
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';

export function median(xs: number[]): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/** False (after saying why on stderr) unless this process runs as root, as the mesh benchmarks need. */
export function isRoot(): boolean {
  if (process.getuid?.() === 0) return true;
  process.stderr.write('bench: needs root (network namespaces, eBPF); run `make bench` as root\n');
  return false;
}

/** Resident set size of a process, MB. */
export function rssMb(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : NaN;
}

/** User + system CPU time of a process so far, seconds. */
export function cpuSeconds(pid: number): number {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return (Number(f[11]) + Number(f[12])) / 100; // utime + stime, in clock ticks of 1/100 s
}

/** Receiver-side throughput from `iperf3 -J`, Gbit/s. */
export function parseIperf(json: string): number {
  const j = JSON.parse(json) as { end?: { sum_received?: { bits_per_second?: number } }; error?: string };
  const bps = j.end?.sum_received?.bits_per_second;
  if (bps === undefined) throw new Error(`iperf3 reported no result${j.error ? `: ${j.error}` : ''}`);
  return bps / 1e9;
}

export interface SockperfResult {
  p50: number;
  p90: number;
  p99: number;
  /** Messages whose reply was observed. */
  observations: number;
  /** Messages sent in the whole run, warm-up included. */
  sent: number;
  dropped: number;
}

/** Percentiles (µs) and counts from sockperf's summary. */
export function parseSockperf(out: string): SockperfResult {
  const num = (re: RegExp, what: string): number => {
    const m = re.exec(out);
    if (!m) throw new Error(`sockperf printed no ${what}:\n${out.slice(-800)}`);
    return Number(m[1]);
  };
  const pct = (p: string) => num(new RegExp(`percentile ${p}\\s*=\\s*([\\d.]+)`), `${p} percentile`);
  return {
    p50: pct('50.000'),
    p90: pct('90.000'),
    p99: pct('99.000'),
    observations: num(/Total (\d+) observations/, 'observation count'),
    sent: num(/\[Total Run\][^\n]*SentMessages=(\d+)/, 'sent count'),
    dropped: num(/# dropped messages = (\d+)/, 'dropped count'),
  };
}

export interface WrkResult {
  requestsPerSec: number;
  requests: number;
  /** connect + read + write + timeout errors, and non-2xx/3xx responses. */
  errors: number;
}

export function parseWrk(out: string): WrkResult {
  const rps = /Requests\/sec:\s+([\d.]+)/.exec(out);
  const total = /(\d+) requests in/.exec(out);
  if (!rps || !total) throw new Error(`wrk printed no result:\n${out.slice(-800)}`);
  const sock = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out);
  const non2xx = /Non-2xx or 3xx responses: (\d+)/.exec(out);
  const errors = (sock ? sock.slice(1).reduce((a, x) => a + Number(x), 0) : 0) + (non2xx ? Number(non2xx[1]) : 0);
  return { requestsPerSec: Number(rps[1]), requests: Number(total[1]), errors };
}

/**
 * Options shared by the data-path benchmarks; undefined when --help was asked (and printed). A
 * bad option prints what is wrong and exits 2.
 */
export function parseBenchArgs(help: string, argv = process.argv.slice(2)): { runs: number; seconds: number; quick: boolean } | undefined {
  try {
    return benchArgs(help, argv);
  } catch (err) {
    process.stderr.write(`bench: ${(err as Error).message}; see --help\n`);
    process.exit(2);
  }
}

function benchArgs(help: string, argv: string[]): { runs: number; seconds: number; quick: boolean } | undefined {
  const { values } = parseArgs({ args: argv, options: { quick: { type: 'boolean' }, runs: { type: 'string' }, seconds: { type: 'string' }, help: { type: 'boolean', short: 'h' } } });
  if (values.help) {
    process.stdout.write(help);
    return undefined;
  }
  const num = (v: string | undefined, env: string | undefined, d: number, what: string) => {
    const x = Number(v ?? env ?? d);
    if (!Number.isInteger(x) || x < 1) throw new Error(`${what} must be a positive integer, got ${JSON.stringify(v ?? env)}`);
    return x;
  };
  const quick = values.quick === true;
  return {
    quick,
    runs: quick ? 1 : num(values.runs, process.env.NODEMESH_BENCH_RUNS, 3, '--runs (or NODEMESH_BENCH_RUNS)'),
    seconds: quick ? 2 : num(values.seconds, process.env.NODEMESH_BENCH_SECONDS, 5, '--seconds (or NODEMESH_BENCH_SECONDS)'),
  };
}

/** The `--quick`/`--runs`/`--seconds`/`--help` lines of a benchmark's help. */
export const BENCH_OPTIONS_HELP = `  --quick        1 run, 2 s per measurement; prints the figures, does not write the docs
  --runs N       runs (default 3, or NODEMESH_BENCH_RUNS)
  --seconds S    seconds per measurement (default 5, or NODEMESH_BENCH_SECONDS)
  -h, --help     this text
`;
