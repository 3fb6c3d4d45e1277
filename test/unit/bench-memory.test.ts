// The memory benchmark's own pieces: the config directory it grows is what the simulator and
// control plane load (n ambient pods, nothing else), this process's memory is read from /proc,
// and the report takes medians and the growth per pod per run. No figure is asserted.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { COUNTS, memoryConfig, NS, readMemory, report, type Reading } from '../../src/bench/memory-report.js';
import { isAmbient, loadConfigDirStrict } from '../../src/k8s/index.js';

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function load(n: number) {
  const dir = mkdtempSync(join(tmpdir(), 'nm-bench-memory-test-'));
  dirs.push(dir);
  writeFileSync(join(dir, 'pods.yaml'), memoryConfig(n));
  return loadConfigDirStrict(dir);
}

describe('memoryConfig', () => {
  it('holds the ambient namespace and no pod at 0', () => {
    const c = load(0);
    expect(c.pods).toHaveLength(0);
    expect(c.namespaces.map((n) => n.metadata.name)).toEqual([NS]);
  });

  it('holds n distinct ambient sleep pods', () => {
    const c = load(50);
    expect(c.pods).toHaveLength(50);
    expect(new Set(c.pods.map((p) => p.metadata.name)).size).toBe(50);
    expect(c.pods.every((p) => p.metadata.namespace === NS && isAmbient(p, c.namespaces))).toBe(true);
    expect(c.pods[0]!.spec.containers[0]!.command).toEqual(['sleep', 'infinity']);
  });
});

describe('readMemory', () => {
  it('reads RSS as its anonymous and file-backed parts', () => {
    const r = readMemory(process.pid);
    expect(r.rss).toBeGreaterThan(0);
    expect(r.anon).toBeGreaterThan(0);
    expect(r.file).toBeGreaterThan(0);
    // RssShmem is the third part; a few MB at most here.
    expect(Math.abs(r.rss - r.anon - r.file)).toBeLessThan(r.rss / 2);
  });

  it('throws for a process that does not exist', () => {
    expect(() => readMemory(2 ** 30)).toThrow();
  });
});

describe('report', () => {
  const run = (base: number, perPod: number) => new Map<number, Reading>(COUNTS.map((n) => [n, { rss: base + n * perPod, anon: base / 2 + n * perPod, file: base / 2 }]));

  it('gives the median of each count and the median growth per pod', () => {
    const s = report([run(90, 0.1), run(100, 0.2), run(80, 0.3)], 60);
    expect(s).toContain('| idle (no pods) | 90.0 | 45.0 | 45.0 |');
    expect(s).toContain('| 1 pod | 90.1 |');
    // Per run: 102.4, 204.8, 307.2 KB per pod; the median is the second.
    expect(s).toContain('Growth per enrolled pod (0 → 50 pods): RSS 205 KB');
    expect(s).toContain('`node dist/bench/memory.js` (3 runs, medians; 60 s)');
    expect(s).toContain('- run 3: RSS 0: 80.0, 1: 80.3, 10: 83.0, 50: 95.0');
  });

  it('shows a missing reading as a dash, not a number', () => {
    const partial = run(90, 0.1);
    partial.delete(50);
    const s = report([partial], 10);
    expect(s).toContain('| 50 pods | – | – | – |');
    expect(s).toContain('RSS – KB');
  });
});
