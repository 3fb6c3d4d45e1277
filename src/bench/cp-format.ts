// Number formatting and per-round summaries shared by the control-plane benchmark's report
// sections (cp-report.ts for the directory source, cp-report-kube.ts for the Kubernetes source).
import type { ChangeResult } from './cp-runner.js';
import { median } from './tools.js';

export const f0 = (x: number): string => (Number.isFinite(x) ? x.toFixed(0) : 'n/a');
export const f1 = (x: number): string => (Number.isFinite(x) ? x.toFixed(1) : 'n/a');
export const mb = (bytes: number): string => f1(bytes / (1 << 20));
export const kb = (bytes: number): string => (bytes >= 10_240 ? `${f1(bytes / 1024)} KiB` : `${f0(bytes)} B`);
export const list = (xs: number[], f = f0): string => xs.map(f).join(', ');
/** a / b as a ratio, `n/a` when either is not a positive finite number. */
export const ratio = (a: number, b: number): string => (Number.isFinite(a) && Number.isFinite(b) && a > 0 && b > 0 ? `${(a / b).toFixed(2)}×` : 'n/a');

export interface Summary {
  p50: number;
  max: number;
  write: number;
  toRescan: number;
  rescan: number;
  cpu: number;
  deliver: number;
}

/** Medians over a series of changes. */
export const summarize = (cs: ChangeResult[]): Summary => ({
  p50: median(cs.map((c) => c.p50)),
  max: median(cs.map((c) => c.max)),
  write: median(cs.map((c) => c.writeMs)),
  toRescan: median(cs.map((c) => c.toRescanMs)),
  rescan: median(cs.map((c) => c.rescanMs)),
  cpu: median(cs.map((c) => c.cpuMs)),
  deliver: median(cs.map((c) => c.deliverMs)),
});

/** One line of raw per-change figures. */
export const rawChanges = (label: string, cs: ChangeResult[]): string =>
  `- ${label}: p50 ${list(cs.map((c) => c.p50))}; max ${list(cs.map((c) => c.max))}; write ${list(cs.map((c) => c.writeMs), f1)}; write → recompute ${list(cs.map((c) => c.toRescanMs))}; recompute ${list(cs.map((c) => c.rescanMs))} (CPU ${list(cs.map((c) => c.cpuMs))}); queued → last applied ${list(cs.map((c) => c.deliverMs))}`;
