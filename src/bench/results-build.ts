// The mesh and L7 benchmarks' figures as docs/benchmarks.json entries: the same medians their
// markdown tables show, their ratios to no mesh, and the goals issue 11 and issue 9 state.
import { spawnSync } from 'node:child_process';
import { cpus } from 'node:os';
import { HAPROXY_PATH } from './haproxy.js';
import { L7_PATHS, type L7PathName } from './l7-cluster.js';
import { GOALS as L7_GOALS, type L7Row } from './l7-report.js';
import { PATHS, type PathName } from './pods.js';
import { num, ratioOf, type Goal, type Machine, type Measure, type SectionResults, type Values } from './results.js';

/** When, where and how a run was made. */
export interface RunMeta {
  command: string;
  date: string;
  machine: Machine;
  runs: number;
  seconds: number;
}

/** This process's run: its own command line, now, this machine. */
export function currentRun(script: string, runs: number, seconds: number): RunMeta {
  const kernel = spawnSync('uname', ['-r'], { encoding: 'utf8' }).stdout?.trim() ?? '?';
  return {
    command: ['node', script, ...process.argv.slice(2)].join(' '),
    date: new Date().toISOString(),
    machine: { vcpu: cpus().length, cpu: cpus()[0]?.model ?? '?', kernel, node: process.versions.node },
    runs,
    seconds,
  };
}

interface Pcts {
  p50: number;
  p90: number;
  p99: number;
}
/** One path's medians, as mesh.ts's table has them. */
export interface MeshRow {
  gbps: number;
  l4: Pcts;
  l16: Pcts;
  cps: number;
  rps: number;
  cpu: number;
}

const MESH_MEASURES: Measure[] = [
  { key: 'gbps', label: 'throughput', unit: 'Gbit/s', better: 'higher' },
  { key: 'p50_4', label: 'p50, 4 conns', unit: 'µs', better: 'lower' },
  { key: 'p90_4', label: 'p90, 4 conns', unit: 'µs', better: 'lower' },
  { key: 'p99_4', label: 'p99, 4 conns', unit: 'µs', better: 'lower' },
  { key: 'p50', label: 'p50', unit: 'µs', better: 'lower' },
  { key: 'p90', label: 'p90', unit: 'µs', better: 'lower' },
  { key: 'p99', label: 'p99', unit: 'µs', better: 'lower' },
  { key: 'cps', label: 'conn/s', unit: '1/s', better: 'higher' },
  { key: 'rps', label: 'req/s', unit: '1/s', better: 'higher' },
  { key: 'cpu', label: 'proxy CPU per 1,000 req', unit: 's', better: 'lower' },
];
/** mesh.ts's rows: nodemesh's paths, and the haproxy sidecars' unless haproxy was missing. */
export type MeshRows = Record<PathName, MeshRow> & Partial<Record<typeof HAPROXY_PATH.name, MeshRow>>;
/** mesh.ts's ratio table: throughput, 16-connection latency, conn/s, req/s. */
const MESH_RATIO_KEYS = ['gbps', 'p50', 'p90', 'p99', 'cps', 'rps'];
const MESH_VS: [keyof MeshRows, PathName][] = [
  ['ambient-same', 'direct-same'],
  ['ambient-cross', 'direct-cross'],
  ['sidecar', 'direct-cross'],
  [HAPROXY_PATH.name, 'direct-cross'],
];
const ISSUE_11 = 'issue 11';
/** Issue 11's goals that are ratios to no mesh (the µs and CPU goals are not). */
const MESH_GOALS: Goal[] = [
  ...(
    [
      ['ambient-same', 0.9, 1.5, 0.5, 0.8],
      ['ambient-cross', 0.35, 3, 0.3, 0.5],
    ] as const
  ).flatMap(([path, gbps, p99, cps, rps]): Goal[] => [
    { path, measure: 'gbps', ratio: gbps, better: 'higher', source: ISSUE_11 },
    { path, measure: 'p99', ratio: p99, better: 'lower', source: ISSUE_11 },
    { path, measure: 'cps', ratio: cps, better: 'higher', source: ISSUE_11 },
    { path, measure: 'rps', ratio: rps, better: 'higher', source: ISSUE_11 },
  ]),
];

/** The mesh section's heading (mesh.ts) and its JSON entry's title. */
export const MESH_TITLE = 'The mesh data path: no mesh, ambient (same node, cross node), sidecar mode and haproxy sidecars';

const pick = (v: Values, keys: string[]): Values => Object.fromEntries(keys.map((k) => [k, v[k] ?? null]));

/** The rows as a docs/benchmarks.json entry; a path without a row (haproxy skipped) is left out, with its ratio. */
export function meshResults(R: MeshRows, run: RunMeta): SectionResults {
  const values = (r: MeshRow): Values => ({
    gbps: num(r.gbps),
    p50_4: num(r.l4.p50),
    p90_4: num(r.l4.p90),
    p99_4: num(r.l4.p99),
    p50: num(r.l16.p50),
    p90: num(r.l16.p90),
    p99: num(r.l16.p99),
    cps: num(r.cps),
    rps: num(r.rps),
    cpu: num(r.cpu),
  });
  const paths = [...PATHS, HAPROXY_PATH].flatMap((p) => {
    const r = R[p.name];
    return r ? [{ name: p.name, label: p.label, values: values(r) }] : [];
  });
  return {
    section: 'mesh',
    title: MESH_TITLE,
    ...run,
    measures: MESH_MEASURES,
    paths,
    ratios: ratiosOf(paths, MESH_VS.filter(([a]) => R[a]), MESH_RATIO_KEYS),
    goals: MESH_GOALS,
  };
}

const L7_MEASURES: Measure[] = [
  { key: 'h1', label: 'HTTP/1.1 req/s', unit: '1/s', better: 'higher' },
  { key: 'h2', label: 'HTTP/2 req/s', unit: '1/s', better: 'higher' },
  { key: 'p50', label: 'p50', unit: 'µs', better: 'lower' },
  { key: 'p90', label: 'p90', unit: 'µs', better: 'lower' },
  { key: 'p99', label: 'p99', unit: 'µs', better: 'lower' },
  { key: 'cpuH1', label: 'proxy CPU per 1,000 req, HTTP/1.1', unit: 'ms', better: 'lower' },
  { key: 'cpuH2', label: 'proxy CPU per 1,000 req, HTTP/2', unit: 'ms', better: 'lower' },
];
const L7_RATIO_KEYS = ['h1', 'h2', 'p50', 'p90', 'p99'];
const ISSUE_9 = 'issue 9';

/** The L7 rows (l7-report.ts's l7Rows); `h2Broken` paths have no HTTP/2 figure. */
export function l7Results(R: Record<L7PathName, Pick<L7Row, 'h1' | 'h2' | 'p50' | 'p90' | 'p99' | 'cpuH1' | 'cpuH2'>>, run: RunMeta, h2Broken: ReadonlySet<string> = new Set()): SectionResults {
  const paths = L7_PATHS.map((p) => {
    const r = R[p.name];
    const v: Values = { h1: num(r.h1), h2: h2Broken.has(p.name) ? null : num(r.h2), p50: num(r.p50), p90: num(r.p90), p99: num(r.p99) };
    // l7-report.ts shows no CPU for the paths without a proxy.
    Object.assign(v, p.proxies.length ? { cpuH1: num(r.cpuH1), cpuH2: num(r.cpuH2) } : { cpuH1: null, cpuH2: null });
    return { name: p.name, label: p.label, values: v };
  });
  const vs = L7_PATHS.filter((p) => !p.name.startsWith('direct-')).map((p): [string, string] => [p.name, p.side === 'same' ? 'direct-same' : 'direct-cross']);
  return {
    section: 'l7',
    title: 'L7: HTTP through the node proxies (ambient, sidecar mode, nginx as a reverse proxy)',
    ...run,
    measures: L7_MEASURES,
    paths,
    ratios: ratiosOf(paths, vs, L7_RATIO_KEYS),
    goals: [
      { path: 'ambient-same', measure: 'h1', ratio: L7_GOALS.sameNode, better: 'higher', source: ISSUE_9 },
      { path: 'ambient-cross', measure: 'h1', ratio: L7_GOALS.crossNode, better: 'higher', source: ISSUE_9 },
    ],
  };
}

function ratiosOf(paths: { name: string; values: Values }[], vs: [string, string][], keys: string[]): SectionResults['ratios'] {
  const by = new Map(paths.map((p) => [p.name, p.values]));
  return vs.map(([path, base]) => {
    const a = pick(by.get(path) ?? {}, keys);
    const b = pick(by.get(base) ?? {}, keys);
    return { path, vs: base, values: Object.fromEntries(keys.map((k) => [k, ratioOf(a[k], b[k])])) };
  });
}
