// The simulator's half of the kubelet role (`nodemesh up --kubeconfig`): a Pod read from the
// Kubernetes API is run on one of the simulator's nodes, and removed again, each under the
// simulator's lock and through the same plan → check → apply as `sim up`, so an API pod is
// built exactly as a pod of a config dir is (cgroup, netns, CNI chain, processes, readiness).
import { isRecord, objectFromRaw, type Pod, type SourcePos } from '../k8s/index.js';
import { terminateCgroups } from './cgroup.js';
import { DEFAULT_GRACE_MS, finalizeIfEmpty } from './down.js';
import { simPaths } from './paths.js';
import { teardownPod, type Progress } from './pod.js';
import { requireRoot, toPodInfo, type SimPodInfo } from './query.js';
import { lockSim, readSimState } from './state.js';
import { simUpPods } from './up.js';

/** What problems about an API pod name as their place: there is no file or line. */
const API_POS: SourcePos = { file: 'kubernetes', line: 0 };

export interface ApiPodOptions {
  stateDir?: string;
  /** Where the pod's processes start (the directory `up` was given stands in for image filesystems). */
  configDir: string;
  /**
   * Host mode: the host node's name. Its pods are wired on the host itself, so spec.nodeName
   * (which names it) is not given to the planner, which would take it for multi-node mode.
   */
  hostNode?: string;
  /** Added to every container's environment (e.g. where its ServiceAccount token is). */
  env?: Record<string, string>;
  readyTimeoutMs?: number;
  onProgress?: Progress;
}

/**
 * A Pod from the API as the simulator runs it: its status left out (the kubelet writes it, so
 * it is no part of the spec; and status.podIP is no pinned address here), `env` added to each
 * container, and in host mode without spec.nodeName. Throws a field error for a pod the
 * simulator cannot run (a container without command).
 */
export function simPodOf(raw: Record<string, unknown>, opts: { hostMode: boolean; env?: Record<string, string> }): Pod {
  const { status: _status, ...rest } = raw;
  const spec = isRecord(rest.spec) ? { ...rest.spec } : {};
  if (opts.hostMode) delete spec.nodeName;
  const extra = Object.entries(opts.env ?? {}).map(([name, value]) => ({ name, value }));
  if (Array.isArray(spec.containers)) {
    spec.containers = spec.containers.map((c: unknown) => (isRecord(c) ? { ...c, env: [...(Array.isArray(c.env) ? c.env : []), ...extra] } : c));
  }
  return objectFromRaw({ ...rest, spec }, API_POS) as Pod;
}

/**
 * Runs one API pod on its node (nothing when it is up already and alive; its containers again
 * when they all exited and its restartPolicy is Always) and returns it as `sim pods` shows it.
 * On failure nothing of it is left and the error says why.
 */
export async function runApiPod(raw: Record<string, unknown>, opts: ApiPodOptions): Promise<SimPodInfo> {
  const pod = simPodOf(raw, { hostMode: opts.hostNode !== undefined, ...(opts.env ? { env: opts.env } : {}) });
  const r = await simUpPods([pod], opts.configDir, {
    ...(opts.stateDir ? { stateDir: opts.stateDir } : {}),
    ...(opts.hostNode ? { nodeName: opts.hostNode } : {}),
    ...(opts.readyTimeoutMs ? { readyTimeoutMs: opts.readyTimeoutMs } : {}),
    ...(opts.onProgress ? { onProgress: opts.onProgress } : {}),
  });
  return r.pods.find((p) => p.uid === pod.metadata.uid)!;
}

/**
 * Removes the simulated pod with this uid, as a kubelet does for a pod deleted from the API:
 * SIGTERM, up to `graceMs`, cgroup.kill, CNI DEL, netns and cgroup removed. Returns the steps
 * that failed without stopping the teardown; nothing when no such pod runs.
 */
export async function removeApiPod(uid: string, opts: { stateDir?: string; graceMs?: number; onProgress?: Progress } = {}): Promise<string[]> {
  requireRoot('removing a simulated pod');
  const progress = opts.onProgress ?? (() => undefined);
  const paths = simPaths(opts.stateDir);
  const release = await lockSim(paths);
  try {
    const state = readSimState(paths);
    const rec = state?.pods.find((p) => p.uid === uid);
    if (!state || !rec) return [];
    await terminateCgroups([rec.cgroup], opts.graceMs ?? DEFAULT_GRACE_MS);
    const warnings = await teardownPod(state, paths, rec, progress);
    warnings.push(...(await finalizeIfEmpty(state, paths, progress)));
    return warnings;
  } finally {
    release();
  }
}

/** The simulated pods (as `sim pods` shows them) by uid. */
export function simPodsByUid(stateDir?: string): Map<string, SimPodInfo> {
  const st = readSimState(simPaths(stateDir));
  return new Map((st?.pods ?? []).map((p) => [p.uid, toPodInfo(p)]));
}
