// `sim up`'s apply and rollback: record the state, create the plan's nodes, then its pods
// (pinned addresses first), restart pods whose processes died; when a step fails, undo what
// this run created (its pods, then its nodes when they hold no pod) and rethrow, so a failure
// never leaves half a pod or half a node.
import { rmSync } from 'node:fs';
import { simCgroupParent } from './cgroup.js';
import { finalizeIfEmpty } from './down.js';
import { readIpForward } from './host.js';
import { createNodes, teardownNode } from './node.js';
import { containerPlans, createPod, restartPod, teardownPod, type Progress } from './pod.js';
import { nodeInfos, toPodInfo } from './query.js';
import { STATE_VERSION, writeSimState, type SimNode, type SimPod, type SimState } from './state.js';
import type { PodPlan, SimUpResult, UpPlan } from './up-plan.js';

/** What this run made, for rollback and the result. */
interface Applied {
  nodes: SimNode[];
  pods: SimPod[];
  restarted: SimPod[];
}

/** The state to write before anything is created: the prior one, or a new one. */
function initialState(plan: UpPlan): SimState {
  const { prior, mode, cgroupRoot, paths } = plan;
  const state: SimState = prior ?? {
    version: STATE_VERSION,
    createdAt: new Date().toISOString(),
    updatedAt: '',
    ipForwardBefore: readIpForward(),
    cgroupRoot,
    cgroupParent: simCgroupParent(cgroupRoot),
    mode,
    nodes: [],
    pods: [],
  };
  state.mode = mode;
  if (mode === 'host') {
    state.nodes = [{ ...state.nodes[0], ...plan.nodes[0]! }, ...state.nodes.slice(1)];
    // With no state nothing can hold an address: host-local data left by a crash would only
    // make pinned IPs look taken.
    if (!prior) rmSync(paths.ipamDir, { recursive: true, force: true });
  }
  return state;
}

/** Multi-node mode: half-made nodes of a crashed run go first (they hold no pods), then the new ones. */
async function applyNodes(state: SimState, plan: UpPlan, applied: Applied, progress: Progress): Promise<void> {
  if (plan.mode !== 'nodes') return;
  for (const n of (plan.prior?.nodes ?? []).filter((x) => x.phase === 'Creating')) {
    progress(`node ${n.name}: left half-created by an earlier run; recreating`);
    await teardownNode(state, plan.paths, n, 0, progress);
  }
  await createNodes(state, plan.paths, plan.freshNodes, progress);
  applied.nodes.push(...plan.freshNodes);
}

/** Creates the plan's new pods, pinned addresses first so a dynamically allocated pod cannot take one of them. */
async function applyPods(state: SimState, plan: UpPlan, applied: Applied, progress: Progress): Promise<void> {
  const toCreate = plan.pods.filter((p) => p.action === 'create' || p.action === 'recreate');
  const ordered = [...toCreate.filter((p) => p.pod.requestedIp), ...toCreate.filter((p) => !p.pod.requestedIp)];
  const readyTimeoutMs = plan.opts.readyTimeoutMs ?? 30_000;
  for (const pl of ordered) {
    if (pl.action === 'recreate' && pl.existing) {
      progress(`pod ${pl.existing.namespace}/${pl.existing.name}: left half-created by an earlier run; recreating`);
      await teardownPod(state, plan.paths, pl.existing, progress);
    }
    const node = state.nodes.find((n) => n.name === pl.target.name) ?? pl.target;
    const rec = await createPod(state, plan.paths, { pod: pl.pod, plans: containerPlans(pl.pod, plan.configDir), node, reportedNode: pl.node, specHash: pl.hash, readyTimeoutMs }, progress);
    applied.pods.push(rec);
    progress(`pod ${rec.namespace}/${rec.name}: ready (${rec.ip}${plan.mode === 'nodes' ? ` on ${node.name}` : ''})`);
  }
}

async function applyRestarts(state: SimState, plan: UpPlan, applied: Applied, progress: Progress): Promise<void> {
  const readyTimeoutMs = plan.opts.readyTimeoutMs ?? 30_000;
  for (const pl of plan.pods.filter((p) => p.action === 'restart')) {
    await restartPod(state, plan.paths, pl.existing!, containerPlans(pl.pod, plan.configDir), readyTimeoutMs, progress);
    applied.restarted.push(pl.existing!);
  }
}

/** Undoes this run's pods and nodes (a node only when no pod is left on it), and the rest if nothing is left. */
async function rollback(state: SimState, plan: UpPlan, applied: Applied, progress: Progress): Promise<void> {
  for (const rec of [...applied.pods].reverse()) await teardownPod(state, plan.paths, rec, progress).catch(() => undefined);
  for (const n of [...applied.nodes].reverse()) {
    if (!state.pods.some((p) => p.hostNode === n.name)) await teardownNode(state, plan.paths, n, 0, progress).catch(() => undefined);
  }
  await finalizeIfEmpty(state, plan.paths, progress).catch(() => undefined);
}

function byName(a: { namespace: string; name: string }, b: { namespace: string; name: string }): number {
  return a.namespace.localeCompare(b.namespace) || a.name.localeCompare(b.name);
}

/** Applies a checked plan; on failure rolls back what it created and rethrows. */
export async function applyPlan(plan: UpPlan, progress: Progress): Promise<SimUpResult> {
  const state = initialState(plan);
  writeSimState(plan.paths, state);
  const applied: Applied = { nodes: [], pods: [], restarted: [] };
  try {
    await applyNodes(state, plan, applied, progress);
    await applyPods(state, plan, applied, progress);
    await applyRestarts(state, plan, applied, progress);
  } catch (e) {
    await rollback(state, plan, applied, progress);
    throw e;
  }
  const unchanged = plan.pods.filter((p: PodPlan) => p.action === 'unchanged').map((p) => p.existing!);
  for (const u of unchanged) progress(`pod ${u.namespace}/${u.name}: already up, unchanged`);
  // Host mode: no pod, no node. Multi-node nodes stay until `sim down` (their agents run there).
  await finalizeIfEmpty(state, plan.paths, progress);
  return {
    mode: plan.mode,
    created: applied.pods.map(toPodInfo),
    restarted: applied.restarted.map(toPodInfo),
    unchanged: unchanged.map(toPodInfo),
    pods: state.pods.map(toPodInfo).sort(byName),
    createdNodes: applied.nodes.map((n) => n.name),
    nodes: nodeInfos(state, plan.paths),
  };
}
