// The control-plane benchmark's own pieces: the mesh it generates is valid and its probe
// revision survives translation, and it rewrites only its own section of docs/benchmarks.md.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { probePolicy, writeBenchConfig } from '../../src/bench/cp-config.js';
import { SECTION_END, SECTION_START } from '../../src/bench/cp-report.js';
import { replaceSection } from '../../src/bench/sections.js';
import { probeSeq } from '../../src/bench/xds-agent.js';
import { buildPolicySet } from '../../src/controlplane/authz.js';
import { checkConfigDir } from '../../src/controlplane/index.js';
import { loadSnapshot } from '../../src/controlplane/sources.js';
import { DEFAULT_MESH } from '../../src/controlplane/translate.js';
import { authorizationFromProto } from '../../src/xds/index.js';

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

describe('control-plane benchmark config', () => {
  it('generates 1,000 workloads, 100 services and 100 policies without a config problem', () => {
    const dir = mkdtempSync(join(tmpdir(), 'nodemesh-bench-cfg-'));
    dirs.push(dir);
    const cfg = writeBenchConfig(dir);
    const r = checkConfigDir(dir);
    expect(r.problems).toEqual([]);
    expect(r.resources).toMatchObject({ pods: 1000, services: 100, authorizationPolicies: 100 });
    expect(cfg.policies).toMatchObject({ total: 100 });
    expect(cfg.policies.allow).toBeGreaterThan(0);
    expect(cfg.policies.deny).toBeGreaterThan(0);
  });

  it('carries the probe revision through translation to what a client decodes', () => {
    const dir = mkdtempSync(join(tmpdir(), 'nodemesh-bench-probe-'));
    dirs.push(dir);
    writeFileSync(join(dir, 'probe.yaml'), probePolicy('probe', 42));
    const set = buildPolicySet(loadSnapshot(dir).authorizationPolicies, [], DEFAULT_MESH);
    const pb = set.authorizations.find((a) => a.name === 'probe')!;
    expect(probeSeq(authorizationFromProto(pb, `${pb.namespace}/${pb.name}`))).toBe(42);
  });
});

describe('docs/benchmarks.md section', () => {
  const block = (body: string) => `${SECTION_START}\n${body}\n${SECTION_END}`;

  it('creates the file when there is none', () => {
    expect(replaceSection(undefined, 'controlplane', 'new')).toBe(`# Benchmarks\n\n${block('new')}\n`);
  });

  it('appends the section after the other content when it has no markers', () => {
    expect(replaceSection('# Benchmarks\n\n## L4\n\ntable\n', 'controlplane', 'new')).toBe(`# Benchmarks\n\n## L4\n\ntable\n\n${block('new')}\n`);
  });

  it('replaces only what lies between the markers', () => {
    const before = `# B\n\n${block('old\nlines')}\n\n<!-- bench:l4:start -->\nl4\n<!-- bench:l4:end -->\n`;
    expect(replaceSection(before, 'controlplane', 'new')).toBe(`# B\n\n${block('new')}\n\n<!-- bench:l4:start -->\nl4\n<!-- bench:l4:end -->\n`);
  });

  it('refuses unbalanced markers rather than guess', () => {
    expect(() => replaceSection(`x\n${SECTION_END}\n${SECTION_START}\n`, 'controlplane', 'new')).toThrow(/unbalanced/);
    expect(() => replaceSection(`x\n${SECTION_START}\n`, 'controlplane', 'new')).toThrow(/unbalanced/);
  });
});
