// The folder arrows of src/ (DESIGN.md, "Repository layout"): which folder may import which,
// no folder cycles, and cross-folder imports only through a folder's index.ts. Reads the
// imports of every file and fails with the offending file:line.
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';

interface Import {
  /** `src/proxy/outbound.ts:12` */
  where: string;
  from: string;
  to: string;
  /** The imported file, relative to src/ (`proxy/index.ts`). */
  target: string;
}

/** Modules directly in src/ (errors.ts, log.ts) are leaves every folder may use. */
const ROOT = '(root)';

/** Arrows that must never exist: importer → imported. */
const FORBIDDEN: ReadonlyArray<[string, string]> = [
  ['proxy', 'controlplane'],
  ['controlplane', 'proxy'],
  ['controlplane', 'redirect'],
  ['xds', 'proxy'],
  ['sim', 'agent'],
  ['sim', 'proxy'],
  ['telemetry', 'proxy'],
];
/** Folders that may import only the listed folders (and nothing else but the root leaves). */
const ONLY: Readonly<Record<string, readonly string[]>> = {
  rbac: ['state', 'net'],
  net: [],
  cni: [],
  state: ['net'],
};

function tsFiles(dir: string, out: string[] = []): string[] {
  for (const f of readdirSync(dir)) {
    const p = join(dir, f);
    if (statSync(p).isDirectory()) tsFiles(p, out);
    else if (f.endsWith('.ts')) out.push(p);
  }
  return out;
}

function folderOf(srcRelative: string): string {
  const parts = srcRelative.split('/');
  return parts.length === 1 ? ROOT : parts[0]!;
}

/** Every relative import, export-from and dynamic import() of the files, with its line. */
export function importsOf(files: ReadonlyMap<string, string>): Import[] {
  const out: Import[] = [];
  const spec = /(?:\bfrom\s*|\bimport\s*\(\s*|^\s*import\s+)'(\.{1,2}\/[^']+)'/gm;
  for (const [file, text] of files) {
    for (const m of text.matchAll(spec)) {
      const line = text.slice(0, m.index).split('\n').length;
      const target = join(dirname(file), m[1]!).replace(/\.js$/, '.ts');
      out.push({ where: `src/${file}:${line}`, from: folderOf(file), to: folderOf(target), target });
    }
  }
  return out;
}

/** What is wrong with a tree's imports, one line per offence, each naming file:line. */
export function violations(files: ReadonlyMap<string, string>): string[] {
  const problems: string[] = [];
  const cross = importsOf(files).filter((i) => i.from !== i.to && i.to !== ROOT);
  for (const i of cross) {
    if (i.target.startsWith('..')) problems.push(`${i.where}: imports ${i.target}, outside src/`);
    if (FORBIDDEN.some(([a, b]) => a === i.from && b === i.to)) problems.push(`${i.where}: ${i.from} must never import ${i.to} (${i.target})`);
    const only = ONLY[i.from];
    if (only && !only.includes(i.to)) problems.push(`${i.where}: ${i.from} may import only ${only.join(', ') || 'the root modules'}, not ${i.to} (${i.target})`);
    if (i.target !== `${i.to}/index.ts`) problems.push(`${i.where}: ${i.from} imports ${i.target}; go through ${i.to}/index.ts`);
  }
  // Folder cycles: any edge a→b where b reaches a again.
  const edges = new Map<string, Map<string, string>>();
  for (const i of cross) {
    if (!edges.has(i.from)) edges.set(i.from, new Map());
    if (!edges.get(i.from)!.has(i.to)) edges.get(i.from)!.set(i.to, i.where);
  }
  const reaches = (from: string, to: string, seen = new Set<string>()): string[] | undefined => {
    if (from === to) return [to];
    if (seen.has(from)) return undefined;
    seen.add(from);
    for (const next of edges.get(from)?.keys() ?? []) {
      const path = reaches(next, to, seen);
      if (path) return [from, ...path];
    }
    return undefined;
  };
  for (const [a, outs] of edges) {
    for (const [b, where] of outs) {
      const back = reaches(b, a);
      if (back) problems.push(`${where}: ${a} → ${b} closes a folder cycle ${[a, ...back].join(' → ')}`);
    }
  }
  return problems;
}

/** The names in `{ a, b as c, type D }` as they are seen outside (c, D). */
function names(list: string): string[] {
  return list
    .split(',')
    .map((n) => n.replace(/\btype\s+/, '').trim())
    .filter(Boolean)
    .map((n) => n.split(/\s+as\s+/).pop()!.trim());
}

/** Exports of each folder's index.ts that no other folder imports, and `export *` lines. */
export function unusedIndexExports(files: ReadonlyMap<string, string>): string[] {
  const problems: string[] = [];
  const used = new Map<string, Set<string>>();
  for (const [file, text] of files) {
    for (const m of text.matchAll(/(?:import|export)\s+(?:type\s+)?\{([^}]*)\}\s*from\s*'((?:\.\.\/)+)([a-z0-9]+)\/index\.js'/g)) {
      const folder = m[3]!;
      if (folderOf(file) === folder) continue;
      if (!used.has(folder)) used.set(folder, new Set());
      for (const n of names(m[1]!)) used.get(folder)!.add(n);
    }
  }
  for (const [file, text] of files) {
    const parts = file.split('/');
    if (parts.length !== 2 || parts[1] !== 'index.ts') continue;
    const folder = parts[0]!;
    for (const m of text.matchAll(/^export\s+(?:type\s+)?\*/gm)) {
      problems.push(`src/${file}:${text.slice(0, m.index).split('\n').length}: \`export *\` hides what ${folder}/ offers; name each export`);
    }
    for (const m of text.matchAll(/export\s+(?:type\s+)?\{([^}]*)\}/g)) {
      const line = text.slice(0, m.index).split('\n').length;
      for (const n of names(m[1]!)) if (!used.get(folder)?.has(n)) problems.push(`src/${file}:${line}: ${n} is exported but no other folder imports it`);
    }
  }
  return problems;
}

function srcTree(): Map<string, string> {
  const src = resolve(new URL('../../src', import.meta.url).pathname);
  return new Map(tsFiles(src).map((f) => [relative(src, f), readFileSync(f, 'utf8')]));
}

describe('architecture: the folder arrows of src/', () => {
  it('finds imports in the real tree (so an empty scan cannot pass)', () => {
    const imports = importsOf(srcTree());
    expect(imports.length).toBeGreaterThan(100);
    expect(imports.some((i) => i.from === 'cli' && i.to === 'cluster' && i.target === 'cluster/index.ts')).toBe(true);
  });

  it('holds in src/: no forbidden arrow, no cycle, every cross-folder import through index.ts', () => {
    expect(violations(srcTree())).toEqual([]);
  });

  it('exports from each index.ts only what another folder imports', () => {
    expect(unusedIndexExports(srcTree())).toEqual([]);
  });

  it('reports an unused or wildcard index export, and not a used one', () => {
    const tree = new Map([
      ['state/index.ts', "export { ProxyState, policyKey, type Workload } from './store.js';\nexport type * from './types.js';\n"],
      ['proxy/outbound.ts', "import { ProxyState, type Workload } from '../state/index.js';\n"],
      ['state/store.ts', "import { policyKey } from './index.js';\n"],
    ]);
    expect(unusedIndexExports(tree)).toEqual([
      'src/state/index.ts:2: `export *` hides what state/ offers; name each export',
      'src/state/index.ts:1: policyKey is exported but no other folder imports it',
    ]);
  });

  it('reports each kind of offence with its file and line', () => {
    const bad = new Map([
      ['proxy/outbound.ts', "// x\nimport { ControlPlane } from '../controlplane/index.js';\n"],
      ['rbac/evaluate.ts', "import { XdsClient } from '../xds/index.js';\n"],
      ['agent/agent.ts', "import { relay } from '../proxy/relay.js';\n"],
      ['state/store.ts', "import type { Decision } from '../rbac/index.js';\n"],
      ['rbac/index.ts', "export { x } from '../state/index.js';\n"],
      ['telemetry/flows.ts', "const m = await import('../proxy/index.js');\n"],
    ]);
    const got = violations(bad);
    expect(got).toContain('src/proxy/outbound.ts:2: proxy must never import controlplane (controlplane/index.ts)');
    expect(got).toContain('src/rbac/evaluate.ts:1: rbac may import only state, net, not xds (xds/index.ts)');
    expect(got).toContain('src/agent/agent.ts:1: agent imports proxy/relay.ts; go through proxy/index.ts');
    expect(got).toContain('src/telemetry/flows.ts:1: telemetry must never import proxy (proxy/index.ts)');
    expect(got.some((p) => p.startsWith('src/state/store.ts:1: state → rbac closes a folder cycle state → rbac → state'))).toBe(true);
    // The twin: the same tree without the offending lines is clean.
    const good = new Map([
      ['proxy/outbound.ts', "import { ProxyState } from '../state/index.js';\nimport { log } from '../log.js';\n"],
      ['rbac/evaluate.ts', "import { policyKey } from '../state/index.js';\nimport { parseCidr } from '../net/index.js';\n"],
      ['agent/agent.ts', "import { relay } from '../proxy/index.js';\nimport { inner } from './inner.js';\n"],
    ]);
    expect(violations(good)).toEqual([]);
  });
});
