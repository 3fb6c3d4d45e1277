// One-off: the mesh and L7 figures that predate docs/benchmarks.json, read back from their
// tables in docs/benchmarks.md into the JSON (and the chart), so the kept results start full.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { withChartLink, writeChart } from './chart.js';
import { L7_PATHS, type L7PathName } from './l7-cluster.js';
import type { L7Row } from './l7-report.js';
import { PATHS, type PathName } from './pods.js';
import { l7Results, meshResults, type MeshRow, type RunMeta } from './results-build.js';
import { writeAtomic, writeResults, type ResultsFile, type SectionResults } from './results.js';
import { sectionMarkers } from './sections.js';

function sectionText(md: string, name: string): string {
  const { start, end } = sectionMarkers(name);
  const a = md.indexOf(start);
  const b = md.indexOf(end);
  if (a < 0 || b < a) throw new Error(`docs/benchmarks.md has no ${name} section`);
  return md.slice(a + start.length, b);
}

/** The run's header lines: `Command: …`, `Machine: …`, `Measured …`. */
function runOf(text: string, name: string): RunMeta {
  const cmd = /Command: .*?\(`(node dist\/bench\/[\w-]+\.js)`; (\d+) runs × (\d+) s per measurement/.exec(text);
  const mach = /Machine: (\d+) vCPU \(([^)]*)\), shared and noisy, kernel (\S+?), Node (\d+(?:\.\d+)*)/.exec(text);
  const day = /Measured (\d{4}-\d{2}-\d{2})/.exec(text);
  if (!cmd || !mach || !day) throw new Error(`the ${name} section's Command/Machine/Measured lines are not the bench's`);
  return { command: cmd[1]!, date: day[1]!, runs: Number(cmd[2]), seconds: Number(cmd[3]), machine: { vcpu: Number(mach[1]), cpu: mach[2]!, kernel: mach[3]!, node: mach[4]! } };
}

const cells = (line: string): string[] => line.trim().replace(/^\||\|$/g, '').split('|').map((c) => c.trim());

/** The rows of the table whose header starts with `head`, by path label; `col(text)` finds a column by its header. */
function table(text: string, head: string): { rows: Map<string, string[]>; col: (h: string) => number } {
  const lines = text.split('\n');
  const i = lines.findIndex((l) => l.startsWith(head));
  if (i < 0) throw new Error(`no table starting ${JSON.stringify(head)}`);
  const header = cells(lines[i]!);
  const rows = new Map<string, string[]>();
  for (let j = i + 2; j < lines.length && lines[j]!.startsWith('|'); j++) {
    const c = cells(lines[j]!);
    rows.set(c[0]!, c);
  }
  const col = (h: string) => {
    const k = header.findIndex((x) => x.includes(h));
    if (k < 0) throw new Error(`table ${JSON.stringify(head)} has no column ${JSON.stringify(h)}`);
    return k;
  };
  return { rows, col };
}

/** `12.55`, `9078`, `8255 (3 failed)`; `–` and `fails¹` are NaN. */
const num = (c: string | undefined): number => {
  const m = /^−?[\d.]+/.exec((c ?? '').trim());
  return m ? Number(m[0].replace('−', '-')) : NaN;
};
const triple = (c: string | undefined): { p50: number; p90: number; p99: number } => {
  const [p50, p90, p99] = (c ?? '').split('/').map(num);
  return { p50: p50 ?? NaN, p90: p90 ?? NaN, p99: p99 ?? NaN };
};
const rowFor = (rows: Map<string, string[]>, label: string): string[] => {
  const r = rows.get(label);
  if (!r) throw new Error(`no row for ${JSON.stringify(label)}`);
  return r;
};

export function importMesh(md: string): SectionResults {
  const text = sectionText(md, 'mesh');
  const { rows, col } = table(text, '| path | iperf3');
  const [g, l4, l16, cps, rps, cpu] = ['iperf3', '4 conns', '16 conns', 'conn/s', 'req/s', 'proxy CPU'].map(col);
  const R = Object.fromEntries(
    PATHS.map((p) => {
      const c = rowFor(rows, p.label);
      return [p.name, { gbps: num(c[g!]), l4: triple(c[l4!]), l16: triple(c[l16!]), cps: num(c[cps!]), rps: num(c[rps!]), cpu: num(c[cpu!]) }];
    }),
  ) as Record<PathName, MeshRow>;
  return meshResults(R, runOf(text, 'mesh'));
}

export function importL7(md: string): SectionResults {
  const text = sectionText(md, 'l7');
  const t = table(text, '| path | HTTP/1.1 req/s');
  const l = table(text, '| path | request time');
  const [h1, h2] = [t.col('HTTP/1.1 req/s'), t.col('HTTP/2 req/s')];
  const [lat, cpu] = [l.col('request time'), l.col('proxy CPU')];
  const broken = new Set<string>();
  const R = Object.fromEntries(
    L7_PATHS.map((p) => {
      const a = rowFor(t.rows, p.label);
      const b = rowFor(l.rows, p.label);
      if (a[h2]!.startsWith('fails')) broken.add(p.name);
      const [cpuH1, cpuH2] = (b[cpu] ?? '').split('/').map(num);
      return [p.name, { h1: num(a[h1]), h2: num(a[h2]), ...triple(b[lat]), cpuH1: cpuH1 ?? NaN, cpuH2: cpuH2 ?? NaN }];
    }),
  ) as Record<L7PathName, Pick<L7Row, 'h1' | 'h2' | 'p50' | 'p90' | 'p99' | 'cpuH1' | 'cpuH2'>>;
  return l7Results(R, runOf(text, 'l7'), broken);
}

const HELP = `Usage: node dist/bench/results-import.js [--docs DIR]

One-off: reads the mesh and l7 sections' tables of DIR/benchmarks.md (default docs/), merges them
into DIR/benchmarks.json (other sections kept), redraws DIR/benchmarks-ratios.svg and adds the
chart's line to benchmarks.md. The benchmarks do this themselves on every run from now on.
`;

async function cli(argv: string[]): Promise<number> {
  if (argv.includes('--help') || argv.includes('-h')) {
    process.stdout.write(HELP);
    return 0;
  }
  const { packageRoot } = await import('../cluster/index.js');
  const i = argv.indexOf('--docs');
  const docs = i >= 0 && argv[i + 1] ? argv[i + 1]! : join(packageRoot, 'docs');
  const mdFile = join(docs, 'benchmarks.md');
  const md = readFileSync(mdFile, 'utf8');
  const json = join(docs, 'benchmarks.json');
  let results: ResultsFile | undefined;
  for (const entry of [importMesh(md), importL7(md)]) results = writeResults(json, entry);
  process.stdout.write(`written to ${json}\nwritten to ${writeChart(results!, docs)}\n`);
  const linked = withChartLink(md);
  if (linked !== md) writeAtomic(mdFile, linked);
  return 0;
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  cli(process.argv.slice(2)).then(
    (c) => (process.exitCode = c),
    (e: unknown) => {
      process.stderr.write(`results-import failed: ${(e as Error).message}\n`);
      process.exitCode = 1;
    },
  );
}
