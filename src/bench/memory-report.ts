// The memory benchmark's parts that need no mesh: the agent's memory from /proc, the config
// directory's YAML for n idle pods, and the report (medians, growth per pod).
import { readFileSync } from 'node:fs';
import { median } from './tools.js';

/** Pod counts read on one agent, in order; the growth per pod is taken from 0 to the last. */
export const COUNTS = [0, 1, 10, 50] as const;
export const NS = 'mem';

export interface Reading {
  rss: number;
  anon: number;
  file: number;
}

/** VmRSS, RssAnon and RssFile of a process, MB. */
export function readMemory(pid: number): Reading {
  const st = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (k: string) => {
    const m = new RegExp(`${k}:\\s+(\\d+) kB`).exec(st);
    return m ? Number(m[1]) / 1024 : NaN;
  };
  return { rss: kb('VmRSS'), anon: kb('RssAnon'), file: kb('RssFile') };
}

/** The config directory's YAML: the ambient namespace and `n` idle pods. */
export function memoryConfig(n: number): string {
  const pods = Array.from(
    { length: n },
    (_, i) => `---
apiVersion: v1
kind: Pod
metadata: { name: idle-${i}, namespace: ${NS} }
spec:
  containers:
  - { name: idle, command: [sleep, infinity] }
`,
  );
  return [`apiVersion: v1\nkind: Namespace\nmetadata: { name: ${NS}, labels: { nodemesh.io/dataplane-mode: ambient } }\n`, ...pods].join('');
}

const f = (x: number, n = 1) => (Number.isFinite(x) ? x.toFixed(n) : '–');

/** The memory section: medians per pod count, growth per pod, and every run's raw figures. */
export function report(runs: Map<number, Reading>[], seconds: number): string {
  const med = (n: number, k: keyof Reading) => median(runs.map((r) => r.get(n)?.[k] ?? NaN));
  const last = COUNTS[COUNTS.length - 1]!;
  // Growth per pod, per run, then the median (not the difference of medians).
  const perPod = (k: keyof Reading) => median(runs.map((r) => ((r.get(last)?.[k] ?? NaN) - (r.get(0)?.[k] ?? NaN)) / last));
  const rows = COUNTS.map((n) => `| ${n === 0 ? 'idle (no pods)' : `${n} pod${n === 1 ? '' : 's'}`} | ${f(med(n, 'rss'))} | ${f(med(n, 'anon'))} | ${f(med(n, 'file'))} |`);
  const raw = runs.map((r, i) => `- run ${i + 1}: RSS ${COUNTS.map((n) => `${n}: ${f(r.get(n)?.rss ?? NaN)}`).join(', ')}`);
  return `## Agent memory

\`node dist/bench/memory.js\` (${runs.length} run${runs.length === 1 ? '' : 's'}, medians; ${f(seconds, 0)} s): the node agent as
\`nodemesh up\` starts it (control plane mode, one node, one ambient namespace), a fresh mesh per
run, pods added to the same agent (\`sleep infinity\`, each enrolled). MB from /proc/<pid>/status:
VmRSS = RssAnon (the process's own memory: V8 heap, buffers, native allocations) + RssFile
(pages of the node binary and shared libraries it has touched, shared with every other node process).

| agent | RSS MB | anon MB | file MB |
|---|---|---|---|
${rows.join('\n')}

Growth per enrolled pod (0 → ${last} pods): RSS ${f(perPod('rss') * 1024, 0)} KB, anon ${f(perPod('anon') * 1024, 0)} KB.
Goals (issue 11): ≤ 60 MB idle; ≤ 150 MB at peak under load (measured by the mesh benchmark).

${raw.join('\n')}
`;
}

