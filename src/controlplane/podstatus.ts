// The pods each node agent reports (as a kubelet reports pod status): node → its pods. Kept in
// a file of the control plane's state dir (0600, written atomically on every change) and read
// back at start, so a restarted control plane serves what the nodes last reported and
// withdraws nothing; a node's next report replaces its entries.
import { EventEmitter } from 'node:events';
import { existsSync, readFileSync } from 'node:fs';
import { writeFileAtomic } from '../files.js';
import { log as rootLog, type Logger } from '../log.js';
import { isIp } from '../net/index.js';
import type { PbPodStatus } from '../xds/index.js';
import { nodeNameProblem } from './node-credentials.js';
import type { ReportedPod } from './translate.js';

const PHASES = new Set(['Pending', 'Running', 'Succeeded', 'Failed', 'Unknown']);
const FILE_VERSION = 1;

export interface NodeReport {
  node: string;
  pods: ReportedPod[];
  reportedAt: string;
}

/** Checks one report entry; returns a reason when it is unusable. */
export function invalidPodStatus(p: PbPodStatus): string | undefined {
  if (!p.namespace || !p.name) return 'namespace and name are required';
  if (p.ip && !isIp(p.ip)) return `ip ${JSON.stringify(p.ip)} is not an IP address`;
  if (!PHASES.has(p.phase)) return `phase ${JSON.stringify(p.phase)} is not one of ${[...PHASES].join(', ')}`;
  return undefined;
}

export interface PodStatusStoreOptions {
  /** Where the reports are kept across restarts; none: in memory only. */
  file?: string;
  logger?: Logger;
}

/** One node's report from the file, or undefined when it is not usable. */
function readNode(n: unknown): NodeReport | undefined {
  const r = n as Partial<NodeReport> | null;
  if (!r || typeof r.node !== 'string' || nodeNameProblem(r.node) || typeof r.reportedAt !== 'string' || !Array.isArray(r.pods)) return undefined;
  const pods: ReportedPod[] = [];
  for (const p of r.pods as Partial<ReportedPod>[]) {
    const e = { uid: p?.uid, namespace: p?.namespace, name: p?.name, ip: p?.ip, phase: p?.phase };
    if (!Object.values(e).every((v) => typeof v === 'string') || invalidPodStatus(e as PbPodStatus)) return undefined;
    pods.push({ ...(e as PbPodStatus), node: r.node });
  }
  return { node: r.node, pods, reportedAt: r.reportedAt };
}

export class PodStatusStore extends EventEmitter<{ change: [node: string] }> {
  readonly #nodes = new Map<string, NodeReport>();
  readonly #file: string | undefined;
  readonly #log: Logger;

  constructor(opts: PodStatusStoreOptions = {}) {
    super();
    this.#file = opts.file;
    this.#log = (opts.logger ?? rootLog).child({ component: 'pod-status' });
    this.#load();
  }

  /** Replaces a node's pods; emits `change` when they differ from the last report. */
  report(node: string, pods: readonly PbPodStatus[]): boolean {
    const next: ReportedPod[] = pods.map((p) => ({ uid: p.uid, namespace: p.namespace, name: p.name, ip: p.ip, phase: p.phase, node }));
    const prev = this.#nodes.get(node);
    const same = prev !== undefined && JSON.stringify(prev.pods) === JSON.stringify(next);
    this.#nodes.set(node, { node, pods: next, reportedAt: new Date().toISOString() });
    if (!same) {
      this.#save();
      this.emit('change', node);
    }
    return !same;
  }

  /**
   * Every reported pod of every node that `keep` lets through. When two nodes report one pod,
   * the latest report wins.
   */
  pods(keep: (p: ReportedPod) => boolean = () => true): ReportedPod[] {
    const latest = [...this.#nodes.values()].sort((a, b) => a.reportedAt.localeCompare(b.reportedAt));
    const byName = new Map<string, ReportedPod>();
    for (const n of latest) for (const p of n.pods) if (keep(p)) byName.set(`${p.namespace}/${p.name}`, p);
    return [...byName.values()];
  }

  nodes(): NodeReport[] {
    return [...this.#nodes.values()];
  }

  #load(): void {
    if (!this.#file || !existsSync(this.#file)) return;
    let data: { version?: unknown; nodes?: unknown };
    try {
      data = JSON.parse(readFileSync(this.#file, 'utf8')) as typeof data;
    } catch (err) {
      this.#log.warn({ err, file: this.#file }, 'cannot read the stored pod status; starting without it (nodes report again)');
      return;
    }
    if (data?.version !== FILE_VERSION || !Array.isArray(data.nodes)) {
      this.#log.warn({ file: this.#file }, 'the stored pod status is not a version 1 file; starting without it (nodes report again)');
      return;
    }
    let skipped = 0;
    for (const n of data.nodes) {
      const r = readNode(n);
      if (r) this.#nodes.set(r.node, r);
      else skipped++;
    }
    if (skipped > 0) this.#log.warn({ file: this.#file, skipped }, 'skipped malformed node reports in the stored pod status');
    this.#log.info({ file: this.#file, nodes: this.#nodes.size, pods: [...this.#nodes.values()].reduce((n, r) => n + r.pods.length, 0) }, 'loaded the pod status nodes reported before the restart');
  }

  #save(): void {
    if (!this.#file) return;
    const body = JSON.stringify({ version: FILE_VERSION, nodes: [...this.#nodes.values()].map((n) => ({ node: n.node, reportedAt: n.reportedAt, pods: n.pods.map((p) => ({ uid: p.uid, namespace: p.namespace, name: p.name, ip: p.ip, phase: p.phase })) })) });
    try {
      writeFileAtomic(this.#file, body + '\n', { mode: 0o600 });
    } catch (err) {
      // The report is taken anyway: only a restart before the next write would lose it.
      this.#log.error({ err, file: this.#file }, 'cannot store the pod status');
    }
  }
}
