// `sim up`'s check: every problem of a plan, found before anything on the host changes, and
// reported together ("N problem(s); nothing was changed"): uids and pinned addresses taken by
// other pods or outside the node's subnet, and CNI configs the runtime could not run.
import { loopbackConflist } from './conflist.js';
import { findPlugin } from './paths.js';
import { parseSubnet, unassignableReason } from './subnet.js';
import { problem, type PodPlan, type UpPlan } from './up-plan.js';

const creates = (p: PodPlan) => p.action === 'create' || p.action === 'recreate';

/** Identity and address conflicts, against the pods kept running and within the config dir. */
function checkIdentities(plan: UpPlan): void {
  const keep = (plan.prior?.pods ?? []).filter((p) => !plan.pods.some((pl) => pl.existing === p && pl.action === 'recreate'));
  const ipOwner = new Map<string, string>();
  const uidOwner = new Map<string, string>();
  for (const p of keep) {
    if (p.ip) ipOwner.set(p.ip, `${p.namespace}/${p.name}`);
    uidOwner.set(p.uid, `${p.namespace}/${p.name}`);
  }
  for (const pl of plan.pods.filter(creates)) {
    const id = `${pl.pod.metadata.namespace}/${pl.pod.metadata.name}`;
    const uidHolder = uidOwner.get(pl.pod.metadata.uid);
    if (uidHolder && uidHolder !== id) plan.problems.add('NM_ERR_CONFIG_CONFLICT', problem(pl.pod, `metadata.uid ${pl.pod.metadata.uid} is already used by pod ${uidHolder}`));
    uidOwner.set(pl.pod.metadata.uid, id);
    const ip = pl.pod.requestedIp;
    if (ip === undefined) continue;
    const why = unassignableReason(parseSubnet(pl.target.subnet), ip);
    if (why) {
      plan.problems.add('NM_ERR_CONFIG_INVALID', problem(pl.pod, `status.podIP ${why}${plan.mode === 'nodes' ? ` of node ${pl.target.name}` : ''}`));
      continue;
    }
    const holder = ipOwner.get(ip);
    if (holder && holder !== id) plan.problems.add('NM_ERR_CONFIG_CONFLICT', problem(pl.pod, `status.podIP ${ip} is already taken by pod ${holder}`));
    ipOwner.set(ip, id);
  }
}

/** Per node with pods to create: a pinned IP needs the "ips" capability, and every plugin must be on CNI_PATH. */
function checkCni(plan: UpPlan): void {
  const toCreate = plan.pods.filter(creates);
  for (const node of plan.nodes) {
    const mine = toCreate.filter((p) => p.target === node);
    const conf = plan.confs.get(node);
    if (mine.length === 0 || !conf) continue;
    if (mine.some((p) => p.pod.requestedIp) && !conf.list.plugins.some((p) => p.capabilities?.ips === true)) {
      plan.problems.add('NM_ERR_CNI', `${conf.confFile}: a pod pins status.podIP but no plugin of the conflist declares the "ips" capability`);
    }
    for (const type of [...loopbackConflist().plugins, ...conf.list.plugins].map((p) => p.type)) {
      if (!findPlugin(type, node.cniPath)) {
        const msg = `${conf.confFile}: CNI plugin "${type}" not found in CNI_PATH ${node.cniPath.join(':')}${type === 'nodemesh-cni' ? ' (build it: make cni)' : ''}`;
        if (!plan.problems.list.includes(msg)) plan.problems.add('NM_ERR_CNI', msg);
      }
    }
  }
}

/** Throws every problem of the plan as one error; returns when the plan can be applied. */
export function checkPlan(plan: UpPlan): void {
  checkIdentities(plan);
  checkCni(plan);
  plan.problems.throwIfAny();
}
