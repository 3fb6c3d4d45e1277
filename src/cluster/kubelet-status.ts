// The Pod status the kubelet role writes back (status subresource, merge patch), shaped as a
// kubelet reports it: phase, podIP(s), hostIP, the Pod conditions with Ready among them and
// one containerStatus per container; and the part of it that says whether a write is due.
import type { SimPodInfo } from '../sim/index.js';

type Raw = Record<string, unknown>;
const rec = (v: unknown): Raw => (v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as Raw) : {});
const now = (): string => new Date().toISOString().replace(/\.\d+Z$/, 'Z');

const CONDITIONS = ['PodReadyToStartContainers', 'Initialized', 'ContainersReady', 'Ready', 'PodScheduled'] as const;

/** What the simulator knows of a pod it was asked to run. */
export type PodOutcome =
  | { kind: 'running'; pod: SimPodInfo }
  /** Its containers all exited and its restartPolicy is not Always. */
  | { kind: 'exited'; pod: SimPodInfo }
  /** It could not be run (yet): why. */
  | { kind: 'failed'; reason: string; message: string };

/** A condition as the pod has it now, keeping its lastTransitionTime when its status is unchanged. */
function condition(raw: Raw, type: string, status: 'True' | 'False', reason?: string, message?: string): Raw {
  const old = (Array.isArray(rec(raw.status).conditions) ? (rec(raw.status).conditions as unknown[]) : []).map(rec).find((c) => c.type === type);
  const since = old && old.status === status && typeof old.lastTransitionTime === 'string' ? old.lastTransitionTime : now();
  return { type, status, lastTransitionTime: since, ...(reason ? { reason } : {}), ...(message ? { message } : {}) };
}

/** The status to write for `raw` given what happened to it; `nodeIp` is its node's address (none for the host). */
export function podStatus(raw: Raw, outcome: PodOutcome, nodeIp: string | null): Raw {
  const old = rec(raw.status);
  const host = nodeIp ? { hostIP: nodeIp, hostIPs: [{ ip: nodeIp }] } : {};
  const startTime = typeof old.startTime === 'string' ? old.startTime : now();
  const containers = (Array.isArray(rec(raw.spec).containers) ? (rec(raw.spec).containers as unknown[]) : []).map(rec);
  if (outcome.kind === 'failed') {
    return {
      phase: 'Pending',
      ...host,
      conditions: [condition(raw, 'PodScheduled', 'True'), condition(raw, 'Ready', 'False', outcome.reason, outcome.message)],
    };
  }
  const p = outcome.pod;
  const running = outcome.kind === 'running';
  const status = running ? 'True' : 'False';
  return {
    phase: running ? 'Running' : 'Failed',
    podIP: p.ip,
    podIPs: [{ ip: p.ip }],
    ...host,
    startTime,
    qosClass: 'BestEffort',
    conditions: CONDITIONS.map((t) => (t === 'PodScheduled' || t === 'Initialized' || t === 'PodReadyToStartContainers' ? condition(raw, t, 'True') : condition(raw, t, status, running ? undefined : 'ContainersExited', running ? undefined : 'its containers exited (the simulator keeps no exit codes)'))),
    containerStatuses: containers.map((c) => ({
      name: String(c.name ?? ''),
      image: String(c.image ?? ''),
      imageID: '',
      containerID: `nodemesh-sim://${p.containerId}`,
      ready: running,
      started: running,
      restartCount: 0,
      state: running ? { running: { startedAt: startTime } } : { terminated: { reason: 'Unknown', exitCode: 0, message: 'the simulator keeps no exit codes' } },
    })),
  };
}

/** What decides whether a write is due: phase, pod IP and every condition's status and reason (not times). */
export function statusSignature(status: unknown): string {
  const s = rec(status);
  const conds = (Array.isArray(s.conditions) ? s.conditions : []).map(rec).map((c) => `${String(c.type)}=${String(c.status)}/${String(c.reason ?? '')}/${String(c.message ?? '')}`).sort();
  return JSON.stringify([s.phase ?? '', s.podIP ?? '', s.hostIP ?? '', conds]);
}
