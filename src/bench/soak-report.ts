// The soak's section of docs/benchmarks.md: the agent's fds, RSS and heap at the start, at the
// end and at their peak, their course over each tenth of the run, the loader's and the agent's
// own counts, and the command that made them.
import { spawnSync } from 'node:child_process';
import type { AgentCounters, LoaderLine, Sample } from './soak-probe.js';

export const SECTION = 'soak';

export interface SoakResult {
  n: number;
  conc: number;
  warmup: number;
  final: LoaderLine;
  seconds: number;
  /** Right after `up`, before any connection. */
  idle: Sample;
  /** After the warm-up, when the measured load starts. */
  start: Sample;
  /** Right after the last connection closed. */
  end: Sample;
  /** After the agent idled a while (timers and GC caught up). */
  settled: Sample;
  samples: Sample[];
  countersBefore: AgentCounters;
  countersAfter: AgentCounters;
  aliveAfter: boolean;
  maxMinutes: number;
}

const f = (x: number, n = 1) => (Number.isFinite(x) ? x.toFixed(n) : '–');
const signed = (x: number, n = 1) => (Number.isFinite(x) ? `${x >= 0 ? '+' : '−'}${Math.abs(x).toFixed(n)}` : '–');
const int = (x: number) => (Number.isFinite(x) ? Math.round(x).toLocaleString('en') : '–');
const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length === 0 ? NaN : s.length % 2 ? s[s.length >> 1]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

/** One row per tenth of the run: the samples taken while it ran. */
function tenths(r: SoakResult): string[] {
  const rows: string[] = [];
  for (let i = 0; i < 10; i++) {
    const lo = (r.n * i) / 10;
    const hi = (r.n * (i + 1)) / 10;
    const s = r.samples.filter((x) => x.done > lo && x.done <= hi);
    if (s.length === 0) continue;
    const fds = s.map((x) => x.fds);
    const heap = s.map((x) => x.heapUsedMb);
    rows.push(
      `| ${int(lo)}–${int(hi)} | ${s.length} | ${f(median(fds), 0)} (${Math.min(...fds)}–${Math.max(...fds)}) | ${f(Math.max(...s.map((x) => x.rssMb)))} | ${f(median(heap))} (${f(Math.min(...heap))}–${f(Math.max(...heap))}) | ${f(Math.max(...s.map((x) => x.heapTotalMb)))} | ${f(median(s.map((x) => x.externalMb)))} |`,
    );
  }
  return rows;
}

export function report(r: SoakResult, env: { machine: string; command: string }): string {
  const all = [r.start, ...r.samples, r.end, r.settled];
  const row = (what: string, pick: (s: Sample) => number, digits: number) =>
    `| ${what} | ${f(pick(r.idle), digits)} | ${f(pick(r.start), digits)} | ${f(pick(r.end), digits)} | ${f(pick(r.settled), digits)} | ${f(Math.max(...all.map(pick)), digits)} | ${signed(pick(r.settled) - pick(r.start), digits)} |`;
  const proxied = r.countersAfter.opened - r.countersBefore.opened;
  const contained = r.countersAfter.errors - r.countersBefore.errors;
  const kinds = Object.entries(r.final.kinds).map(([k, v]) => `${k} ${v}`).join(', ');
  const kernel = spawnSync('uname', ['-r'], { encoding: 'utf8' }).stdout.trim();
  // The course after the first tenth (where V8 sizes its heap): flat means nothing per connection.
  const first = r.samples.filter((s) => s.done > r.n / 10);
  const a = first[0];
  const rssPerConn = a ? ((r.settled.rssMb - a.rssMb) * 1024 * 1024) / Math.max(1, r.final.done - a.done) : NaN;
  const trend = a
    ? `From ${int(a.done)} connections to the end, RSS went from ${f(a.rssMb)} to ${f(r.settled.rssMb)} MB (${signed(r.settled.rssMb - a.rssMb)} MB, ${f(rssPerConn, 1)} bytes per connection), the V8 heap total from ${f(a.heapTotalMb)} to ${f(r.settled.heapTotalMb)} MB, V8 external memory from ${f(a.externalMb)} to ${f(r.settled.externalMb)} MB and open fds from ${a.fds} to ${r.settled.fds}; the heap in use rises and falls with each collection, within the same band in every tenth.`
    : '';
  return `## Soak: ${int(r.n)} connections through the agent

Command: \`${env.command}\` (\`node dist/bench/soak.js\`; needs root; \`--help\` for the options). Machine: ${env.machine}, shared, kernel ${kernel}, Node ${process.versions.node}. Measured ${new Date().toISOString().slice(0, 10)}.

**How.** \`nodemesh up\` on one simulated node (control plane, one agent), an ambient namespace
with a client pod and an nginx server pod. A Python asyncio loader inside the client pod
(the script is in \`src/bench/soak-probe.ts\`) opens ${int(r.n)} short TCP connections to the server pod's IP,
${r.conc} at a time: connect, \`GET / HTTP/1.0\`, read the 200 to EOF, close. Each one is
captured by the eBPF redirect and crosses the agent (outbound 15001, the same-node hand-off
to inbound, the upstream connection to nginx). ${int(r.warmup)} warm-up connections come first. The agent's open
descriptors (\`/proc/<pid>/fd\`), VmRSS (\`/proc/<pid>/status\`) and V8 heap
(\`nodemesh_agent_nodejs_heap_size_used_bytes\`, \`_heap_size_total_bytes\`, \`_external_memory_bytes\` from its \`/metrics\` on 15020) are sampled
before the load, every 5 s during it, right after it and after 15 s of idling. The run is
bounded: exactly N connections, and the load phase stops at \`--max-minutes\` (${r.maxMinutes}).

**Result.** ${int(r.final.done)} connections in ${f(r.seconds / 60, 1)} min (${int(r.final.done / r.seconds)} per second),
${int(r.final.errors)} failed at the client${kinds ? ` (${kinds})` : ''}. The agent counted ${int(proxied)} connections
opened (\`istio_tcp_connections_opened_total\`, destination reporter) and ${int(contained)} contained
connection errors (\`nodemesh_connection_errors_total\`), and holds ${int(r.countersAfter.active)} open at the end
(\`nodemesh_active_connections\`). The agent ${r.aliveAfter ? 'was still the same process at the end' : '**was not running at the end**'}.

| agent | idle, before any load | start (after warm-up) | end (last connection closed) | end + 15 s idle | peak | settled − start |
|---|---|---|---|---|---|---|
${row('open fds', (s) => s.fds, 0)}
${row('RSS, MB', (s) => s.rssMb, 1)}
${row('V8 heap used, MB', (s) => s.heapUsedMb, 1)}
${row('V8 heap total, MB', (s) => s.heapTotalMb, 1)}
${row('V8 external, MB', (s) => s.externalMb, 1)}

Over each tenth of the run (samples every 5 s; fds and heap used: median and range):

| connections | samples | open fds | RSS max, MB | V8 heap used, MB | V8 heap total max, MB | external, MB (median) |
|---|---|---|---|---|---|---|
${tenths(r).join('\n')}

${trend}
`;
}
