// docs/benchmarks-ratios.svg: each benchmark section's ratios to no mesh as bars on a log scale
// around 1×, with the issues' goals as dashed lines; plain SVG text, drawn from docs/benchmarks.json.
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { readResults, ResultsFileError, writeAtomic, type ResultsFile, type SectionResults } from './results.js';

export const CHART_NAME = 'benchmarks-ratios.svg';
/** The line docs/benchmarks.md shows the chart with (outside every section, so no bench rewrites it). */
export const CHART_LINK = `![Ratios to no mesh per benchmark section, from benchmarks.json](${CHART_NAME})`;
const CHART_NOTE =
  '*The chart is drawn by the benchmarks from [benchmarks.json](benchmarks.json), the figures of the sections below (schema in `src/bench/results.ts`); `node dist/bench/chart.js` redraws it.*';

export const WIDTH = 960;
const LEFT = 64;
const RIGHT = 16;
const PLOT_H = 240;
const COLORS = ['#4e79a7', '#f28e2b', '#59a14f', '#b07aa1', '#76b7b2', '#9c755f', '#e15759'];
const ORDER = ['mesh', 'l7'];

export function escapeXml(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;').replace(/'/g, '&#39;');
}

/** A ratio as the markdown tables write it: `0.38×`, `6.47×`, `28×`. */
const fmt = (r: number): string => `${r >= 10 ? r.toFixed(0) : r >= 0.01 ? r.toFixed(2) : r.toPrecision(1)}×`;
/** A power of two on the axis: `4×`, `1×`, `1/8×`. */
const tick = (e: number): string => (e >= 0 ? `${2 ** e}×` : `1/${2 ** -e}×`);
const n = (x: number): string => (Math.round(x * 10) / 10).toString();
const attrs = (a: Record<string, string | number>): string =>
  Object.entries(a)
    .map(([k, v]) => ` ${k}="${escapeXml(typeof v === 'number' ? n(v) : v)}"`)
    .join('');
const el = (name: string, a: Record<string, string | number>, body?: string): string => (body === undefined ? `<${name}${attrs(a)}/>` : `<${name}${attrs(a)}>${body}</${name}>`);
const text = (a: Record<string, string | number>, s: string): string => el('text', a, escapeXml(s));

/** The log2 range a section's bars and goals need: at least 0.5× to 2×, at most 1/64× to 64×. */
export function scaleOf(s: SectionResults): { lo: number; hi: number } {
  const all = [...s.ratios.flatMap((r) => Object.values(r.values)), ...s.goals.map((g) => g.ratio)].filter((x): x is number => typeof x === 'number' && x > 0);
  const logs = all.map(Math.log2);
  return { lo: Math.max(-6, Math.min(-1, Math.floor(Math.min(...logs)))), hi: Math.min(6, Math.max(1, Math.ceil(Math.max(...logs)))) };
}

const when = (d: string): string => (d.includes('T') ? `${d.slice(0, 16).replace('T', ' ')} UTC` : d);

/** One section's panel, drawn from `top`; its SVG and height. */
function panel(s: SectionResults, top: number): { svg: string; height: number } {
  const out: string[] = [];
  const labelOf = new Map(s.paths.map((p) => [p.name, p.label]));
  const measureOf = new Map(s.measures.map((m) => [m.key, m]));
  const keys = [...new Set(s.ratios.flatMap((r) => Object.keys(r.values)))];
  out.push(text({ x: LEFT, y: top + 18, 'font-size': 15, 'font-weight': 'bold' }, s.title));
  out.push(text({ x: LEFT, y: top + 36, 'font-size': 12, fill: '#444' }, `${s.command} · ${s.runs} runs × ${s.seconds} s per measurement, medians · ${when(s.date)}`));
  out.push(text({ x: LEFT, y: top + 52, 'font-size': 12, fill: '#444' }, `${s.machine.vcpu} vCPU (${s.machine.cpu}), kernel ${s.machine.kernel}, Node ${s.machine.node} · section "${s.section}" of docs/benchmarks.md`));
  // The legend: one swatch per ratio, wrapped to the width; then the goal line's sample.
  let lx = LEFT;
  let ly = top + 72;
  const item = (w: number, draw: (x: number, y: number) => string) => {
    if (lx + w > WIDTH - RIGHT) {
      lx = LEFT;
      ly += 18;
    }
    out.push(draw(lx, ly));
    lx += w;
  };
  s.ratios.forEach((r, i) => {
    const label = `${labelOf.get(r.path) ?? r.path} ÷ ${labelOf.get(r.vs) ?? r.vs}`;
    item(label.length * 7 + 28, (x, y) => el('rect', { class: 'swatch', x, y: y - 10, width: 12, height: 12, fill: COLORS[i % COLORS.length]! }) + text({ x: x + 16, y, 'font-size': 12 }, label));
  });
  const sources = [...new Set(s.goals.map((g) => g.source))];
  if (s.goals.length) {
    const label = `goal (${sources.join(', ')})`;
    item(label.length * 7 + 36, (x, y) => el('line', { x1: x, y1: y - 4, x2: x + 20, y2: y - 4, stroke: '#d62728', 'stroke-width': 2, 'stroke-dasharray': '4 2' }) + text({ x: x + 24, y, 'font-size': 12 }, label));
  }
  item(260, (x, y) => text({ x, y, 'font-size': 12, fill: '#444' }, '↑ higher is better · ↓ lower is better'));

  const plotTop = ly + 16;
  const { lo, hi } = scaleOf(s);
  const y = (r: number): number => plotTop + ((hi - Math.min(hi, Math.max(lo, Math.log2(r)))) / (hi - lo)) * PLOT_H;
  const x0 = LEFT;
  const x1 = WIDTH - RIGHT;
  for (let e = lo; e <= hi; e++) {
    const v = 2 ** e;
    const one = e === 0;
    out.push(el('line', { class: one ? 'one' : 'tick', 'data-value': v, x1: x0, y1: y(v), x2: x1, y2: y(v), stroke: one ? '#333' : '#ddd', 'stroke-width': one ? 1.5 : 1 }));
    out.push(text({ x: x0 - 6, y: y(v) + 4, 'font-size': 11, 'text-anchor': 'end', fill: '#444' }, tick(e)));
  }
  // Goal lines go on top of every bar, so a neighbouring bar never hides one.
  const goals: string[] = [];
  const groupW = (x1 - x0) / Math.max(1, keys.length);
  const barW = Math.min(28, (groupW * 0.8) / Math.max(1, s.ratios.length));
  keys.forEach((k, gi) => {
    const m = measureOf.get(k);
    const cx = x0 + groupW * (gi + 0.5);
    const arrow = m ? (m.better === 'higher' ? ' ↑' : ' ↓') : '';
    out.push(text({ x: cx, y: plotTop + PLOT_H + 28, 'font-size': 12, 'text-anchor': 'middle' }, `${m?.label ?? k}${arrow}`));
    s.ratios.forEach((r, ri) => {
      const bx = cx - (barW * s.ratios.length) / 2 + barW * ri;
      const v = r.values[k];
      const label = `${labelOf.get(r.path) ?? r.path}, ${m?.label ?? k}`;
      if (typeof v !== 'number' || v <= 0) {
        out.push(text({ class: 'missing', x: bx + barW / 2, y: y(1) - 4, 'font-size': 10, 'text-anchor': 'middle', fill: '#888' }, '–'));
        return;
      }
      const top1 = Math.min(y(1), y(v));
      out.push(
        el(
          'rect',
          { class: 'bar', 'data-path': r.path, 'data-measure': k, 'data-ratio': v, x: bx + 1, y: top1, width: barW - 2, height: Math.abs(y(v) - y(1)), fill: COLORS[ri % COLORS.length]! },
          el('title', {}, escapeXml(`${label}: ${fmt(v)} of ${labelOf.get(r.vs) ?? r.vs}`)),
        ),
      );
      out.push(text({ x: bx + barW / 2, y: v >= 1 ? y(v) - 3 : y(v) + 11, 'font-size': 9, 'text-anchor': 'middle', fill: '#222' }, fmt(v)));
      for (const g of s.goals.filter((g) => g.path === r.path && g.measure === k)) {
        goals.push(
          el(
            'line',
            { class: 'goal', 'data-path': g.path, 'data-measure': k, 'data-ratio': g.ratio, x1: bx - 2, y1: y(g.ratio), x2: bx + barW + 2, y2: y(g.ratio), stroke: '#d62728', 'stroke-width': 2, 'stroke-dasharray': '4 2' },
            el('title', {}, escapeXml(`goal (${g.source}): ${labelOf.get(g.path) ?? g.path}, ${m?.label ?? k} ${g.better === 'higher' ? '≥' : '≤'} ${fmt(g.ratio)}`)),
          ),
        );
      }
    });
  });
  out.push(...goals);
  return { svg: out.join('\n'), height: plotTop + PLOT_H + 44 - top };
}

/** The chart of every section that has ratios (mesh, l7 first), one panel each, as SVG text. */
export function ratioChart(results: ResultsFile): string {
  const rank = (name: string) => (ORDER.includes(name) ? ORDER.indexOf(name) : ORDER.length);
  const sections = Object.values(results.sections)
    .filter((s) => s.ratios.length)
    .sort((a, b) => rank(a.section) - rank(b.section) || a.section.localeCompare(b.section));
  const parts: string[] = [];
  let top = 8;
  for (const s of sections) {
    const p = panel(s, top);
    parts.push(`<g class="section" data-section="${escapeXml(s.section)}">\n${p.svg}\n</g>`);
    top += p.height + 16;
  }
  if (!sections.length) {
    parts.push(text({ x: LEFT, y: 40, 'font-size': 14 }, 'No benchmark results with ratios yet: run `make bench`.'));
    top = 60;
  }
  const height = Math.round(top);
  return `<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="http://www.w3.org/2000/svg" width="${WIDTH}" height="${height}" viewBox="0 0 ${WIDTH} ${height}" font-family="system-ui, -apple-system, Segoe UI, Helvetica, Arial, sans-serif">
<title>nodemesh benchmarks: ratios to no mesh</title>
<rect width="${WIDTH}" height="${height}" fill="#fff"/>
${parts.join('\n')}
</svg>
`;
}

/** docs/benchmarks.md with the chart's line (and its note) under the title, if it is not there yet. */
export function withChartLink(md: string): string {
  if (md.includes(`](${CHART_NAME})`)) return md;
  const block = `${CHART_LINK}\n\n${CHART_NOTE}\n`;
  const m = /^# .*\n/m.exec(md);
  if (!m) return `${block}\n${md}`;
  const at = m.index + m[0].length;
  return `${md.slice(0, at)}\n${block}${md.slice(at).replace(/^\n*/, '\n')}`;
}

/** Draws the chart of `results` into `docsDir`; the file written. */
export function writeChart(results: ResultsFile, docsDir: string): string {
  const file = join(docsDir, CHART_NAME);
  writeAtomic(file, ratioChart(results));
  return file;
}

const HELP = `Usage: node dist/bench/chart.js [--json FILE] [--out FILE] [--link]

Redraws docs/benchmarks-ratios.svg from docs/benchmarks.json (the results the benchmarks keep):
one panel per section with ratios (mesh, l7), each path's ratio to no mesh per measure on a log
scale around 1×, the goals of issue 11 and issue 9 as dashed lines. The benchmarks draw it
themselves when they write their section; this is for a hand-edited or merged JSON file.
  --json FILE  the results file (default docs/benchmarks.json)
  --out FILE   where to write the SVG (default docs/benchmarks-ratios.svg)
  --link       also add the chart's line to docs/benchmarks.md if it is missing
`;

async function cli(argv: string[]): Promise<number> {
  const { packageRoot } = await import('../cluster/index.js');
  const docs = join(packageRoot, 'docs');
  let json = join(docs, 'benchmarks.json');
  let out = join(docs, CHART_NAME);
  let link = false;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--help' || a === '-h') {
      process.stdout.write(HELP);
      return 0;
    } else if (a === '--json' && argv[i + 1]) json = argv[++i]!;
    else if (a === '--out' && argv[i + 1]) out = argv[++i]!;
    else if (a === '--link') link = true;
    else {
      process.stderr.write(`chart: unknown argument ${a}\n${HELP}`);
      return 2;
    }
  }
  try {
    writeAtomic(out, ratioChart(readResults(json)));
  } catch (err) {
    if (!(err instanceof ResultsFileError)) throw err;
    process.stderr.write(`chart: ${err.message}\n`);
    return 1;
  }
  process.stdout.write(`written to ${out}\n`);
  if (link) {
    const md = join(docs, 'benchmarks.md');
    const before = readFileSync(md, 'utf8');
    const after = withChartLink(before);
    if (after !== before) writeFileSync(md, after);
  }
  return 0;
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  cli(process.argv.slice(2)).then(
    (c) => (process.exitCode = c),
    (e: unknown) => {
      process.stderr.write(`chart failed: ${(e as Error).stack ?? String(e)}\n`);
      process.exitCode = 1;
    },
  );
}
