// h2load (nghttp2-client) for the L7 benchmark: its command lines for HTTP/2 throughput and for
// latency at a constant request rate, and the parsers of its summary and per-request log.

export interface H2loadResult {
  requestsPerSec: number;
  /** Requests answered 2xx or 3xx. */
  succeeded: number;
  /** Failed requests: network errors, timeouts and non-2xx/3xx answers. */
  errors: number;
}

/** The summary h2load prints: `finished in 5.00s, 12345.60 req/s, …` and the `requests:` line. */
export function parseH2load(out: string): H2loadResult {
  const rps = /finished in [\d.]+m?s, ([\d.]+) req\/s/.exec(out);
  const req = /requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed, \d+ errored, (\d+) timeout/.exec(out);
  if (!rps || !req) throw new Error(`h2load printed no result:\n${out.slice(-800)}`);
  return { requestsPerSec: Number(rps[1]), succeeded: Number(req[1]), errors: Number(req[2]) + Number(req[3]) };
}

/**
 * HTTP/2 throughput with prior knowledge (h2c, no Upgrade): `conns` connections of `streams`
 * concurrent streams each, for `seconds`.
 */
export function h2loadThroughputArgs(url: string, conns: number, streams: number, seconds: number): string[] {
  return ['h2load', '-c', String(conns), '-m', String(streams), '-D', String(seconds), url];
}

/**
 * HTTP/1.1 at `rate` requests per second in all over `conns` keep-alive connections, each
 * request's time written to `logFile`. `-r 1 --rate-period 1ms` opens one connection per
 * millisecond, so the connections' request timers are staggered and the requests arrive spread
 * over each period instead of all `conns` at once (h2load starts every client's `--rps` timer
 * when its connection is up).
 */
export function h2loadRateArgs(url: string, conns: number, rate: number, seconds: number, logFile: string): string[] {
  return ['h2load', '--h1', '-c', String(conns), '-r', '1', '--rate-period', '1ms', '--rps', String(rate / conns), '-n', String(rate * seconds), '--log-file', logFile, url];
}

export interface LatencyResult {
  /** Request times, µs (nearest rank). */
  p50: number;
  p90: number;
  p99: number;
  /** Requests answered 2xx or 3xx (their times make the percentiles). */
  ok: number;
  /** Requests that failed (status -1) or were answered otherwise. */
  failed: number;
}

/** Percentiles of an h2load `--log-file`: lines of `start µs <TAB> status <TAB> duration µs`. */
export function parseH2loadLog(text: string): LatencyResult {
  const times: number[] = [];
  let failed = 0;
  for (const line of text.split('\n')) {
    if (!line.trim()) continue;
    const [, status, dur] = line.split('\t');
    const code = Number(status);
    const us = Number(dur);
    if (!Number.isFinite(code) || !Number.isFinite(us)) throw new Error(`h2load log line ${JSON.stringify(line)} is not start<TAB>status<TAB>µs`);
    if (code >= 200 && code < 400) times.push(us);
    else failed++;
  }
  if (times.length === 0) throw new Error(`h2load logged no successful request (${failed} failed)`);
  times.sort((a, b) => a - b);
  const rank = (p: number) => times[Math.max(0, Math.ceil(p * times.length) - 1)]!;
  return { p50: rank(0.5), p90: rank(0.9), p99: rank(0.99), ok: times.length, failed };
}
