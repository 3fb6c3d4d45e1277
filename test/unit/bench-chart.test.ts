// The ratio chart: well-formed XML, one bar per stored ratio with its height on the log scale,
// goal lines where goals are stated, labels escaped, and the docs line inserted once.
import { describe, expect, it } from 'vitest';
import { CHART_LINK, escapeXml, ratioChart, withChartLink } from '../../src/bench/chart.js';
import { meshResults, type MeshRow } from '../../src/bench/results-build.js';
import type { ResultsFile, SectionResults } from '../../src/bench/results.js';

/** Throws unless `xml` is one well-formed element tree: balanced tags, quoted attributes, escaped text. */
function checkXml(xml: string): void {
  const body = xml.replace(/^<\?xml [^?]*\?>\s*/, '');
  const stack: string[] = [];
  let roots = 0;
  for (const [tok] of body.matchAll(/<[^>]*>|[^<]+/g)) {
    if (!tok.startsWith('<')) {
      if (/&(?!(amp|lt|gt|quot|#\d+);)/.test(tok)) throw new Error(`unescaped & in ${JSON.stringify(tok)}`);
      if (!stack.length && tok.trim()) throw new Error(`text outside the root: ${JSON.stringify(tok)}`);
      continue;
    }
    const close = /^<\/([\w:-]+)\s*>$/.exec(tok);
    if (close) {
      if (stack.pop() !== close[1]) throw new Error(`${tok} closes the wrong element`);
      continue;
    }
    const open = /^<([\w:-]+)((?:\s+[\w:-]+="[^"<]*")*)\s*(\/?)>$/.exec(tok);
    if (!open) throw new Error(`malformed tag ${tok}`);
    if (!stack.length) roots++;
    if (!open[3]) stack.push(open[1]!);
  }
  if (stack.length) throw new Error(`unclosed ${stack.join(', ')}`);
  if (roots !== 1) throw new Error(`${roots} root elements`);
}

type Attrs = Record<string, string>;
const elements = (svg: string, name: string, cls: string): Attrs[] =>
  [...svg.matchAll(new RegExp(`<${name}((?:\\s+[\\w:-]+="[^"]*")*)\\s*/?>`, 'g'))]
    .map((m) => Object.fromEntries([...m[1]!.matchAll(/([\w:-]+)="([^"]*)"/g)].map((a) => [a[1]!, a[2]!])))
    .filter((a) => a.class === cls);

const row = (gbps: number, p99: number, rps: number): MeshRow => ({ gbps, l4: { p50: 100, p90: 150, p99 }, l16: { p50: 110, p90: 160, p99 }, cps: rps / 5, rps, cpu: 0.1 });
const run = { command: 'node dist/bench/mesh.js --runs 3', date: '2026-12-01T10:00:00.000Z', machine: { vcpu: 2, cpu: 'AMD EPYC', kernel: '6.1', node: '24.0.0' }, runs: 3, seconds: 5 };
const mesh = (): SectionResults =>
  meshResults({ 'direct-same': row(10, 1000, 60000), 'direct-cross': row(8, 1000, 50000), 'ambient-same': row(4, 1500, 30000), 'ambient-cross': row(1, 6000, 10000), sidecar: row(1, 5000, 9000) }, run);
const file = (...s: SectionResults[]): ResultsFile => ({ v: 1, sections: Object.fromEntries(s.map((x) => [x.section, x])) });

describe('ratioChart', () => {
  it('is well-formed XML (and the check rejects what is not)', () => {
    checkXml(ratioChart(file(mesh())));
    checkXml(ratioChart(file()));
    expect(() => checkXml('<svg><g></svg>')).toThrow();
    expect(() => checkXml('<svg><text>a & b</text></svg>')).toThrow();
    expect(() => checkXml('<svg><rect x=1/></svg>')).toThrow();
    expect(() => checkXml('<svg/><svg/>')).toThrow();
  });

  it('draws one bar per stored ratio, from 1× to the ratio on the log2 scale', () => {
    const s = mesh();
    const svg = ratioChart(file(s));
    const bars = elements(svg, 'rect', 'bar');
    // Grouped by measure, one bar per path in each group.
    const keys = Object.keys(s.ratios[0]!.values);
    const expected = keys.flatMap((k) => s.ratios.map((r) => ({ path: r.path, measure: k, v: r.values[k]! })));
    expect(bars.map((b) => `${b['data-path']}/${b['data-measure']}`)).toEqual(expected.map((e) => `${e.path}/${e.measure}`));
    expect(bars).toHaveLength(18);
    const one = elements(svg, 'line', 'one')[0]!;
    const two = elements(svg, 'line', 'tick').find((t) => t['data-value'] === '2')!;
    const unit = Number(one.y1) - Number(two.y1);
    expect(unit).toBeGreaterThan(0);
    for (const [i, b] of bars.entries()) {
      const v = expected[i]!.v;
      expect(Number(b['data-ratio'])).toBeCloseTo(v, 1);
      expect(Number(b.height)).toBeCloseTo(Math.abs(Math.log2(v)) * unit, 0);
      // Above the 1× line when more than no mesh, below it when less.
      const edge = v >= 1 ? Number(b.y) + Number(b.height) : Number(b.y);
      expect(edge).toBeCloseTo(Number(one.y1), 0);
    }
    // ambient-same throughput is 0.4×: below 1× by log2(2.5) units.
    const t = bars.find((b) => b['data-path'] === 'ambient-same' && b['data-measure'] === 'gbps')!;
    expect(Number(t.y)).toBeCloseTo(Number(one.y1), 0);
    expect(Number(t.height)).toBeCloseTo(Math.log2(2.5) * unit, 0);
  });

  it('draws no bar for a missing ratio', () => {
    const s = mesh();
    s.ratios[0]!.values.gbps = null;
    const svg = ratioChart(file(s));
    expect(elements(svg, 'rect', 'bar').some((b) => b['data-path'] === s.ratios[0]!.path && b['data-measure'] === 'gbps')).toBe(false);
    expect(elements(svg, 'rect', 'bar')).toHaveLength(s.ratios.length * 6 - 1);
    expect(elements(svg, 'text', 'missing')).toHaveLength(1);
  });

  it("draws issue 11's goals as lines at their ratio over their path's bar", () => {
    const s = mesh();
    const svg = ratioChart(file(s));
    const goals = elements(svg, 'line', 'goal');
    expect(goals).toHaveLength(8);
    const one = Number(elements(svg, 'line', 'one')[0]!.y1);
    const unit = one - Number(elements(svg, 'line', 'tick').find((t) => t['data-value'] === '2')!.y1);
    const g = goals.find((x) => x['data-path'] === 'ambient-same' && x['data-measure'] === 'gbps')!;
    expect(Number(g['data-ratio'])).toBe(0.9);
    expect(Number(g.y1)).toBeCloseTo(one - Math.log2(0.9) * unit, 0);
    const bar = elements(svg, 'rect', 'bar').find((b) => b['data-path'] === 'ambient-same' && b['data-measure'] === 'gbps')!;
    expect(Number(g.x1)).toBeLessThan(Number(bar.x));
    expect(Number(g.x2)).toBeGreaterThan(Number(bar.x) + Number(bar.width));
    expect(svg).toContain('goal (issue 11)');
    expect(elements(ratioChart(file({ ...s, goals: [] })), 'line', 'goal')).toHaveLength(0);
  });

  it('escapes labels, titles and the command, and shows the date and command in the caption', () => {
    const s = mesh();
    s.paths[2]!.label = 'ambient <fast> & "quoted"';
    s.title = "Mesh <'test'>";
    s.command = 'node dist/bench/mesh.js --label a&b';
    const svg = ratioChart(file(s));
    checkXml(svg);
    expect(svg).toContain('ambient &lt;fast&gt; &amp; &quot;quoted&quot;');
    expect(svg).not.toContain('<fast>');
    expect(svg).toContain('Mesh &lt;&#39;test&#39;&gt;');
    expect(svg).toContain('node dist/bench/mesh.js --label a&amp;b');
    expect(svg).toContain('2026-12-01 10:00 UTC');
    expect(escapeXml(`<&>"'`)).toBe('&lt;&amp;&gt;&quot;&#39;');
  });

  it('has a fixed width and one panel per section with ratios, mesh first', () => {
    const l7 = { ...mesh(), section: 'l7', title: 'L7' };
    const none = { ...mesh(), section: 'soak', title: 'Soak', ratios: [] };
    const svg = ratioChart(file(l7, none, mesh()));
    expect(svg).toMatch(/<svg [^>]*width="960"/);
    expect([...svg.matchAll(/data-section="(\w+)"/g)].map((m) => m[1])).toEqual(['mesh', 'l7']);
  });
});

describe('withChartLink', () => {
  it('puts the line under the title, outside every section, once', () => {
    const md = '# Benchmarks\n\n<!-- bench:mesh:start -->\nx\n<!-- bench:mesh:end -->\n';
    const once = withChartLink(md);
    expect(once.startsWith(`# Benchmarks\n\n${CHART_LINK}\n`)).toBe(true);
    expect(once.indexOf(CHART_LINK)).toBeLessThan(once.indexOf('<!-- bench:mesh:start -->'));
    expect(once).toContain('<!-- bench:mesh:start -->\nx\n<!-- bench:mesh:end -->\n');
    expect(withChartLink(once)).toBe(once);
  });
});
