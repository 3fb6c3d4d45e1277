// docs/benchmarks.json: merged by section, written by rename, a broken or newer file reported and
// left alone; the bench writer keeps the markdown whatever the JSON; the one-off markdown importer.
import { existsSync, linkSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { CHART_LINK } from '../../src/bench/chart.js';
import { HAPROXY_PATH } from '../../src/bench/haproxy.js';
import { importMesh } from '../../src/bench/results-import.js';
import { meshResults, type MeshRow, type RunMeta } from '../../src/bench/results-build.js';
import { readResults, ResultsFileError, writeAtomic, writeResults, type SectionResults } from '../../src/bench/results.js';
import { writeBenchSection } from '../../src/bench/run.js';
import { replaceSection } from '../../src/bench/sections.js';

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
  vi.restoreAllMocks();
});
const tmp = (): string => {
  const d = mkdtempSync(join(tmpdir(), 'nodemesh-bench-results-'));
  dirs.push(d);
  return d;
};

const run = (date: string): RunMeta => ({ command: 'node dist/bench/mesh.js', date, machine: { vcpu: 2, cpu: 'test', kernel: '6.1', node: '24.0.0' }, runs: 3, seconds: 5 });
const row = (gbps: number, p99: number, rps: number): MeshRow => ({ gbps, l4: { p50: 100, p90: 150, p99 }, l16: { p50: 110, p90: 160, p99 }, cps: rps / 5, rps, cpu: 0.1 });
const mesh = (date = '2026-12-01T10:00:00Z', gbps = 4): SectionResults =>
  meshResults({ 'direct-same': row(10, 1000, 60000), 'direct-cross': row(8, 1000, 50000), 'ambient-same': row(gbps, 1500, 30000), 'ambient-cross': row(1, 6000, 10000), sidecar: row(1, 5000, 9000) }, run(date));
const other = (section: string): SectionResults => ({ ...mesh(), section, title: section, ratios: [], goals: [] });

describe('writeResults', () => {
  it('merges by section: writing one keeps the others, rewriting one replaces only it', () => {
    const file = join(tmp(), 'benchmarks.json');
    writeResults(file, mesh('2026-12-01T10:00:00Z', 4));
    writeResults(file, other('l7'));
    writeResults(file, mesh('2026-12-02T10:00:00Z', 5));
    const r = readResults(file);
    expect(Object.keys(r.sections).sort()).toEqual(['l7', 'mesh']);
    expect(r.v).toBe(1);
    expect(r.sections.mesh!.date).toBe('2026-12-02T10:00:00Z');
    expect(r.sections.mesh!.ratios.find((x) => x.path === 'ambient-same')!.values.gbps).toBe(0.5);
    expect(r.sections.l7).toEqual(other('l7'));
  });

  it('replaces the file by rename: a hard link to the old file keeps the old bytes (an in-place write would not)', () => {
    const d = tmp();
    const file = join(d, 'benchmarks.json');
    writeResults(file, mesh());
    const before = readFileSync(file, 'utf8');
    linkSync(file, join(d, 'old'));
    writeResults(file, other('l7'));
    expect(readFileSync(join(d, 'old'), 'utf8')).toBe(before);
    expect(readFileSync(file, 'utf8')).not.toBe(before);
    expect(readdirSync(d).sort()).toEqual(['benchmarks.json', 'old']);
    // The control: a write in place shows through a link, so the check above can fail.
    linkSync(file, join(d, 'again'));
    writeFileSync(file, 'in place');
    expect(readFileSync(join(d, 'again'), 'utf8')).toBe('in place');
  });

  it('leaves no temporary file when the write fails', () => {
    const d = tmp();
    expect(() => writeAtomic(join(d, 'missing-dir', 'x.json'), '{}')).toThrow();
    expect(readdirSync(d)).toEqual([]);
  });

  it('reports a broken file with its path and leaves it as it is, unless told to replace it', () => {
    const file = join(tmp(), 'benchmarks.json');
    writeFileSync(file, '{"v": 1, "sections": ');
    const err = (() => {
      try {
        writeResults(file, mesh());
      } catch (e) {
        return e;
      }
    })();
    expect(err).toBeInstanceOf(ResultsFileError);
    expect((err as ResultsFileError).file).toBe(file);
    expect((err as Error).message).toContain(file);
    expect(readFileSync(file, 'utf8')).toBe('{"v": 1, "sections": ');
    writeResults(file, mesh(), { replaceBroken: true });
    expect(Object.keys(readResults(file).sections)).toEqual(['mesh']);
  });

  it('names the offending field of a malformed entry', () => {
    const file = join(tmp(), 'benchmarks.json');
    writeResults(file, mesh());
    const good = JSON.parse(readFileSync(file, 'utf8'));
    expect(() => readResults(file)).not.toThrow();
    good.sections.mesh.paths[2].values.gbps = 'fast';
    writeFileSync(file, JSON.stringify(good));
    expect(() => readResults(file)).toThrow(expect.objectContaining({ field: 'sections.mesh.paths[2].values.gbps' }));
    good.sections.mesh.paths[2].values.gbps = null;
    good.sections.mesh.section = 'l7';
    writeFileSync(file, JSON.stringify(good));
    expect(() => readResults(file)).toThrow(expect.objectContaining({ field: 'sections.mesh.section' }));
  });

  it('refuses a schema version it does not know, and a file without one', () => {
    const file = join(tmp(), 'benchmarks.json');
    writeFileSync(file, JSON.stringify({ v: 1, sections: {} }));
    expect(readResults(file).sections).toEqual({});
    writeFileSync(file, JSON.stringify({ v: 2, sections: {} }));
    expect(() => readResults(file)).toThrow(expect.objectContaining({ field: 'v' }));
    writeFileSync(file, JSON.stringify({ sections: {} }));
    expect(() => writeResults(file, mesh())).toThrow(expect.objectContaining({ field: 'v' }));
    expect(JSON.parse(readFileSync(file, 'utf8'))).toEqual({ sections: {} });
  });

  it('keeps the haproxy sidecars as a path with their ratio to no mesh cross node, and leaves both out when skipped', () => {
    const file = join(tmp(), 'benchmarks.json');
    const base = { 'direct-same': row(10, 1000, 60000), 'direct-cross': row(8, 1000, 50000), 'ambient-same': row(4, 1500, 30000), 'ambient-cross': row(1, 6000, 10000), sidecar: row(1, 5000, 9000) };
    writeResults(file, meshResults({ ...base, 'haproxy-sidecar': row(2, 4000, 20000) }, run('2026-12-01')));
    const r = readResults(file).sections.mesh!;
    expect(r.paths.map((p) => p.name)).toEqual(['direct-same', 'direct-cross', 'ambient-same', 'ambient-cross', 'sidecar', 'haproxy-sidecar']);
    expect(r.paths.at(-1)).toMatchObject({ label: HAPROXY_PATH.label, values: { gbps: 2, p99: 4000, rps: 20000 } });
    expect(r.ratios.find((x) => x.path === 'haproxy-sidecar')).toMatchObject({ vs: 'direct-cross', values: { gbps: 0.25, p99: 4, rps: 0.4 } });
    const skipped = meshResults(base, run('2026-12-01'));
    expect(skipped.paths.map((p) => p.name)).not.toContain('haproxy-sidecar');
    expect(skipped.ratios.map((x) => x.path)).toEqual(['ambient-same', 'ambient-cross', 'sidecar']);
  });

  it('stores a figure the run could not make as null, not NaN', () => {
    const file = join(tmp(), 'benchmarks.json');
    const one = row(1, 1, 1);
    const rows = { 'direct-same': one, 'direct-cross': one, 'ambient-same': one, 'ambient-cross': one, sidecar: { ...one, gbps: NaN } };
    writeResults(file, meshResults(rows, run('2026-12-01')));
    const r = readResults(file).sections.mesh!;
    expect(r.paths.find((p) => p.name === 'sidecar')!.values.gbps).toBeNull();
    expect(r.ratios.find((p) => p.path === 'sidecar')!.values.gbps).toBeNull();
    expect(r.ratios.find((p) => p.path === 'ambient-same')!.values.gbps).toBe(1);
  });
});

describe('writeBenchSection with results', () => {
  it('writes the section, the JSON, the chart and the chart line outside every section', () => {
    const d = tmp();
    writeFileSync(join(d, 'benchmarks.md'), '# Benchmarks\n\n<!-- bench:l7:start -->\nold l7\n<!-- bench:l7:end -->\n');
    writeBenchSection('mesh', '## Mesh\n\nfigures', mesh(), d);
    const md = readFileSync(join(d, 'benchmarks.md'), 'utf8');
    expect(md.indexOf(CHART_LINK)).toBeGreaterThan(0);
    expect(md.indexOf(CHART_LINK)).toBeLessThan(md.indexOf('<!-- bench:'));
    expect(md).toContain('old l7');
    expect(md).toContain('## Mesh\n\nfigures');
    expect(Object.keys(readResults(join(d, 'benchmarks.json')).sections)).toEqual(['mesh']);
    expect(readFileSync(join(d, 'benchmarks-ratios.svg'), 'utf8')).toContain('class="bar"');
    // A second run neither repeats the line nor disturbs it.
    writeBenchSection('mesh', '## Mesh\n\nnew figures', mesh(), d);
    const again = readFileSync(join(d, 'benchmarks.md'), 'utf8');
    expect(again.split(CHART_LINK).length).toBe(2);
    expect(again).toBe(replaceSection(md, 'mesh', '## Mesh\n\nnew figures'));
  });

  it('keeps the markdown when the JSON is broken: logs it, leaves the file, puts the run beside it', () => {
    const d = tmp();
    const json = join(d, 'benchmarks.json');
    writeFileSync(json, 'not json');
    const log = vi.spyOn(process.stderr, 'write').mockImplementation(() => true);
    writeBenchSection('mesh', '## Mesh\n\nfigures', mesh(), d);
    expect(readFileSync(join(d, 'benchmarks.md'), 'utf8')).toContain('## Mesh\n\nfigures');
    expect(readFileSync(json, 'utf8')).toBe('not json');
    expect(Object.keys(readResults(`${json}.new`).sections)).toEqual(['mesh']);
    expect(existsSync(join(d, 'benchmarks-ratios.svg'))).toBe(false);
    expect(String(log.mock.calls[0]?.[0])).toContain(json);
  });

  it('without results, touches neither the JSON nor the chart', () => {
    const d = tmp();
    writeBenchSection('mesh', '## Mesh', undefined, d);
    expect(readdirSync(d)).toEqual(['benchmarks.md']);
  });
});

describe('importMesh', () => {
  it("reproduces the markdown's own ratio table from its path table", () => {
    const md = readFileSync(new URL('../../docs/benchmarks.md', import.meta.url), 'utf8');
    const r = importMesh(md);
    const line = md.split('\n').find((l) => l.startsWith('| ambient cross node / no mesh cross node |'))!;
    const cells = line.split('|').slice(2, -1).map((c) => Number(c.trim().split(' ')[0]!.replace('×', '')));
    const v = r.ratios.find((x) => x.path === 'ambient-cross')!.values;
    // The table's ratios come from unrounded medians, the import from the rounded ones shown.
    const got = ['gbps', 'p50', 'p90', 'p99', 'cps', 'rps'].map((k) => v[k]!);
    expect(got).toHaveLength(cells.length);
    got.forEach((x, i) => expect(Math.abs(x - cells[i]!), `ratio ${i}: ${x} vs ${cells[i]}`).toBeLessThanOrEqual(0.02 * Math.max(1, cells[i]!)));
    expect(r.runs).toBeGreaterThan(0);
    expect(r.date).toMatch(/^\d{4}-\d{2}-\d{2}$/);
  });
});
