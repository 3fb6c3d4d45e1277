// `sim up`: create the nodes and pods of a config dir that are not up yet, as plan → check →
// apply. The plan says what to do from the config dir and the state (up-plan.ts); the check
// collects every problem before anything changes (up-check.ts); apply creates the nodes and
// pods and, when a step fails, rolls back what it made (up-apply.ts). So a bad input never
// leaves half a pod or half a node.
import { resolve } from 'node:path';
import { loadConfigDirStrict, type Pod } from '../k8s/index.js';
import { simPaths } from './paths.js';
import { requireRoot } from './query.js';
import { lockSim } from './state.js';
import { applyPlan } from './up-apply.js';
import { checkPlan } from './up-check.js';
import { planUp, type SimUpOptions, type SimUpResult } from './up-plan.js';

export type { SimUpOptions, SimUpResult } from './up-plan.js';

export async function simUp(dir: string, opts: SimUpOptions = {}): Promise<SimUpResult> {
  requireRoot('sim up');
  const cfg = loadConfigDirStrict(dir); // file:line errors, before anything else
  return simUpPods(cfg.pods, resolve(dir), opts);
}

/**
 * `sim up` for these Pods (the config dir's, or Pods read from the Kubernetes API by the
 * kubelet role), their processes started in `configDir` (the stand-in for image filesystems).
 */
export async function simUpPods(pods: Pod[], configDir: string, opts: SimUpOptions = {}): Promise<SimUpResult> {
  requireRoot('sim up');
  const progress = opts.onProgress ?? (() => undefined);
  const paths = simPaths(opts.stateDir);
  const release = await lockSim(paths);
  try {
    const plan = planUp(pods, configDir, paths, opts);
    if ('done' in plan) return plan.done;
    checkPlan(plan);
    return await applyPlan(plan, progress);
  } finally {
    release();
  }
}
