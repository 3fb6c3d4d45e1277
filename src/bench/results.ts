// The benchmarks' kept results: docs/benchmarks.json, one entry per docs/benchmarks.md section,
// merged by section, written atomically, and checked on read so a broken file is never clobbered.
//
// Schema, version 1 (`"v": 1`; a reader refuses any other version):
//   { "v": 1, "sections": { "<section>": SectionResults, ... } }
//   SectionResults: {
//     section   the docs/benchmarks.md section name (`mesh`, `l7`), same as its key
//     title     the section's heading
//     command   the command line that made the figures (`node dist/bench/mesh.js --runs 3`)
//     date      ISO 8601 (a full timestamp when written by a bench, a day when imported)
//     machine   { vcpu, cpu, kernel, node }
//     runs, seconds   runs per path and seconds per measurement (medians over the runs)
//     measures  [{ key, label, unit, better: 'higher' | 'lower' }], the columns of `paths`
//     paths     [{ name, label, values: { <measure key>: number | null } }], medians per path
//     ratios    [{ path, vs, values: { <measure key>: number | null } }], path ÷ vs (no mesh), same run
//     goals     [{ path, measure, ratio, better, source }], the issues' goals as ratios to `vs`
//   }
// null stands for a figure the run could not produce (NaN in the bench).
import { existsSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { formatPath, isRecord, type FieldPath } from '../k8s/index.js';

export const RESULTS_VERSION = 1;

export interface Measure {
  key: string;
  label: string;
  unit: string;
  /** Which way is good for the ratio: `higher` for throughput, `lower` for latency. */
  better: 'higher' | 'lower';
}
export type Values = Record<string, number | null>;
export interface PathResult {
  name: string;
  label: string;
  values: Values;
}
export interface Ratio {
  path: string;
  vs: string;
  values: Values;
}
export interface Goal {
  path: string;
  measure: string;
  ratio: number;
  better: 'higher' | 'lower';
  /** Where the goal is stated: `issue 11`. */
  source: string;
}
export interface Machine {
  vcpu: number;
  cpu: string;
  kernel: string;
  node: string;
}
export interface SectionResults {
  section: string;
  title: string;
  command: string;
  date: string;
  machine: Machine;
  runs: number;
  seconds: number;
  measures: Measure[];
  paths: PathResult[];
  ratios: Ratio[];
  goals: Goal[];
}
export interface ResultsFile {
  v: typeof RESULTS_VERSION;
  sections: Record<string, SectionResults>;
}

/** The results file is not one this code wrote: which file and which field (errors.ts, NM_ERR_BENCH_RESULTS). */
export { BenchError as ResultsFileError } from '../errors.js';
import { BenchError as ResultsFileError } from '../errors.js';

const BETTER = ['higher', 'lower'] as const;

function check(file: string, v: unknown): ResultsFile {
  const fail = (p: FieldPath, why: string): never => {
    throw new ResultsFileError(file, formatPath(p), why);
  };
  const rec = (x: unknown, p: FieldPath): Record<string, unknown> => (isRecord(x) ? x : fail(p, 'must be an object'));
  const arr = (x: unknown, p: FieldPath): unknown[] => (Array.isArray(x) ? x : fail(p, 'must be a list'));
  const s = (x: unknown, p: FieldPath): string => (typeof x === 'string' ? x : fail(p, 'must be a string'));
  const n = (x: unknown, p: FieldPath): number => (typeof x === 'number' && Number.isFinite(x) ? x : fail(p, 'must be a number'));
  const better = (x: unknown, p: FieldPath) => (BETTER.includes(x as 'higher') ? (x as 'higher' | 'lower') : fail(p, "must be 'higher' or 'lower'"));
  const values = (x: unknown, p: FieldPath): Values => {
    const m = rec(x, p);
    for (const [k, y] of Object.entries(m)) if (y !== null) n(y, [...p, k]);
    return m as Values;
  };
  const top = rec(v, []);
  if (top.v !== RESULTS_VERSION) fail(['v'], `is ${JSON.stringify(top.v)}; this nodemesh reads version ${RESULTS_VERSION} only`);
  const sections = rec(top.sections, ['sections']);
  for (const [name, raw] of Object.entries(sections)) {
    const p: FieldPath = ['sections', name];
    const e = rec(raw, p);
    if (s(e.section, [...p, 'section']) !== name) fail([...p, 'section'], `is ${JSON.stringify(e.section)}, not its key ${JSON.stringify(name)}`);
    for (const k of ['title', 'command', 'date']) s(e[k], [...p, k]);
    const m = rec(e.machine, [...p, 'machine']);
    n(m.vcpu, [...p, 'machine', 'vcpu']);
    for (const k of ['cpu', 'kernel', 'node']) s(m[k], [...p, 'machine', k]);
    n(e.runs, [...p, 'runs']);
    n(e.seconds, [...p, 'seconds']);
    arr(e.measures, [...p, 'measures']).forEach((x, i) => {
      const q = [...p, 'measures', i];
      const r = rec(x, q);
      for (const k of ['key', 'label', 'unit']) s(r[k], [...q, k]);
      better(r.better, [...q, 'better']);
    });
    arr(e.paths, [...p, 'paths']).forEach((x, i) => {
      const q = [...p, 'paths', i];
      const r = rec(x, q);
      s(r.name, [...q, 'name']);
      s(r.label, [...q, 'label']);
      values(r.values, [...q, 'values']);
    });
    arr(e.ratios, [...p, 'ratios']).forEach((x, i) => {
      const q = [...p, 'ratios', i];
      const r = rec(x, q);
      s(r.path, [...q, 'path']);
      s(r.vs, [...q, 'vs']);
      values(r.values, [...q, 'values']);
    });
    arr(e.goals, [...p, 'goals']).forEach((x, i) => {
      const q = [...p, 'goals', i];
      const r = rec(x, q);
      for (const k of ['path', 'measure', 'source']) s(r[k], [...q, k]);
      n(r.ratio, [...q, 'ratio']);
      better(r.better, [...q, 'better']);
    });
  }
  return top as unknown as ResultsFile;
}

/** The results in `file`; an empty set when it does not exist. Throws ResultsFileError when it is broken. */
export function readResults(file: string): ResultsFile {
  if (!existsSync(file)) return { v: RESULTS_VERSION, sections: {} };
  let parsed: unknown;
  try {
    parsed = JSON.parse(readFileSync(file, 'utf8'));
  } catch (err) {
    throw new ResultsFileError(file, '', `is not JSON (${(err as Error).message})`);
  }
  return check(file, parsed);
}

/** Writes through a temporary file and rename(2), so a reader (or a crash) never sees half a file. */
export function writeAtomic(file: string, text: string): void {
  const tmp = `${file}.tmp-${process.pid}`;
  try {
    writeFileSync(tmp, text);
    renameSync(tmp, file);
  } finally {
    rmSync(tmp, { force: true });
  }
}

export interface WriteResultsOptions {
  /** Replace a broken file with this entry alone instead of refusing (the explicit choice). */
  replaceBroken?: boolean;
}

/**
 * Merges `entry` into `file` (every other section kept) and returns the merged results.
 * A broken file is left as it is: the error is thrown, unless `replaceBroken`.
 */
export function writeResults(file: string, entry: SectionResults, opts: WriteResultsOptions = {}): ResultsFile {
  let current: ResultsFile;
  try {
    current = readResults(file);
  } catch (err) {
    if (!(err instanceof ResultsFileError) || !opts.replaceBroken) throw err;
    current = { v: RESULTS_VERSION, sections: {} };
  }
  const merged: ResultsFile = { v: RESULTS_VERSION, sections: { ...current.sections, [entry.section]: entry } };
  // Checking what we are about to write keeps a bench's own bug (a NaN, a missing field) out of the file.
  const text = `${JSON.stringify(merged, null, 2)}\n`;
  check(`${file} (about to be written)`, JSON.parse(text));
  writeAtomic(file, text);
  return merged;
}

/** A finite number or null: how a figure goes into the file (JSON has no NaN). */
export const num = (x: number): number | null => (Number.isFinite(x) ? x : null);

/** `a / b` as a stored ratio, null when either is missing or b is 0. */
export function ratioOf(a: number | null | undefined, b: number | null | undefined): number | null {
  return typeof a === 'number' && typeof b === 'number' && b !== 0 ? num(a / b) : null;
}
