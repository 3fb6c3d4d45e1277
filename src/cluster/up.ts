// The embedded cluster's up and down: the whole setup (control plane, agents, simulated pods;
// with --kubeconfig also the kubelet role on the Kubernetes API) in the background, and its
// complete removal.
import { existsSync, readdirSync, rmSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { agentPaths, DEFAULT_PIN_ROOT, PORTS } from '../net/index.js';
import { Redirector } from '../redirect/index.js';
import { listPods, simDown, simUp } from '../sim/index.js';
import { uninstallChainedPlugin } from './cni.js';
import { CLUSTER_CP_ADDRESS, multiNodeNodes, nodeDump, removeNodeAgentDirs, removeNodePins, startClusterControlPlane, startNodeAgent } from './nodes.js';
import { UsageError } from '../errors.js';
import { controlPlaneDir, getJson } from './daemon.js';
import { ADMIN, CP_ADDRESS, CP_ADMIN, printTable, progress, startAgent, startAgentWithControlPlane, startControlPlane, stopAgent, stopControlPlane } from './host.js';
import { downKube, refuseMixedModes, stopKubelet, upKube } from './kube-up.js';
import { kubePaths, type KubeRecord } from './kube-record.js';

export { ADMIN, agentPid, CP_ADDRESS, CP_ADMIN, printTable, progress, startAgent, startAgentWithControlPlane, startControlPlane, stopAgent, stopControlPlane } from './host.js';

interface DumpPod {
  namespace: string;
  name: string;
  ip: string;
}

export interface UpOptions {
  /** No control plane: each agent reads pod metadata from the directory. */
  local?: boolean;
  /** Run on the Kubernetes API of this kubeconfig: objects created there, the simulator as the nodes' kubelet. */
  kubeconfig?: string;
}

/** Brings everything up; returns once every ambient pod's traffic is captured. */
export async function up(dirArg: string, sd: string, opts: UpOptions = {}): Promise<void> {
  const dir = resolve(dirArg);
  if (!existsSync(dir)) throw new UsageError(`config directory ${dir} does not exist`);
  if (opts.local && opts.kubeconfig) throw new UsageError('--local and --kubeconfig exclude each other: on the Kubernetes API the control plane takes everything from it');
  // A failed first `up` leaves nothing behind (no namespaces, pins or daemons holding the
  // node's ports, no objects in the API); a failed re-run on a mesh that is up leaves that mesh as it was.
  const fresh = !existsSync(sd) || readdirSync(sd).length === 0;
  try {
    await upSteps(dir, sd, opts);
  } catch (err) {
    if (!fresh) {
      progress(`bringing the mesh up failed; what was up before is left running ('nodemesh down --state-dir ${sd}' removes it all)`);
      throw err;
    }
    if (!existsSync(sd) || readdirSync(sd).length === 0) throw err; // it failed before making anything
    progress('bringing the mesh up failed; removing what was started');
    await down(sd).catch((e: unknown) => progress(`removing it failed too (${(e as Error).message}); run 'nodemesh down --state-dir ${sd}'`));
    throw err;
  }
}

async function upSteps(dir: string, sd: string, opts: UpOptions): Promise<void> {
  if (opts.kubeconfig) {
    const r = await upKube(dir, sd, opts.kubeconfig);
    return summary(sd, r.mode === 'nodes', false, kubeLines(r, sd));
  }
  refuseMixedModes(sd, undefined);
  // Nodes first (none in host mode): each node's agent must run before its pods are created.
  const nodes = await simUp(dir, { stateDir: sd, nodesOnly: true, onProgress: (l) => progress(l) });
  if (nodes.mode === 'nodes') return upNodes(dir, sd, opts);
  if (opts.local) {
    progress(`starting the node agent in local mode (log: ${agentPaths(sd).logFile})`);
    await startAgent(dir, sd);
  } else {
    progress(`starting the control plane (log: ${join(controlPlaneDir(sd), 'control-plane.log')})`);
    await startControlPlane(dir, sd);
    progress(`starting the node agent (log: ${agentPaths(sd).logFile}); it waits for its first xDS sync`);
    await startAgentWithControlPlane(sd);
  }
  progress('creating pods (CNI bridge + host-local + nodemesh-cni)');
  await simUp(dir, { stateDir: sd, onProgress: (l) => progress(l) });
  return summary(sd, false, opts.local ?? false, '');
}

/** Multi-node: the control plane on the cluster network, one agent per node netns, then the pods. */
async function upNodes(dir: string, sd: string, opts: UpOptions): Promise<void> {
  const nodes = multiNodeNodes(sd);
  if (!opts.local) {
    progress(`starting the control plane on the cluster network, ${CLUSTER_CP_ADDRESS} (log: ${join(controlPlaneDir(sd), 'control-plane.log')})`);
    await startClusterControlPlane(dir, sd);
  }
  for (const n of nodes) {
    progress(`starting the agent of node ${n.name} in netns ${n.netns} (log: ${join(n.agentStateDir, 'agent', 'agent.log')})`);
    await startNodeAgent(n, sd, dir, { local: opts.local ?? false });
  }
  progress('creating pods (CNI bridge + host-local + nodemesh-cni, in each node)');
  await simUp(dir, { stateDir: sd, onProgress: (l) => progress(l) });
  return summary(sd, true, opts.local ?? false, '');
}

function kubeLines(r: KubeRecord, sd: string): string {
  return (
    `Kubernetes API: ${r.server} (kubeconfig ${r.kubeconfig})${r.relay ? `, reached from the cluster network at ${r.relay.listen}` : ''}\n` +
    `kubelet of node(s) ${r.nodes.map((n) => n.name).join(', ')}: the simulator (log: ${kubePaths(sd).kubeletLog}); Pods created through the API later run when bound to one of them\n`
  );
}

/** The table of pods and whether the mesh captures each, and where to look next. */
async function summary(sd: string, multi: boolean, local: boolean, extra: string): Promise<void> {
  const enrolled = new Set<string>();
  const dumps = multi ? await Promise.all(multiNodeNodes(sd).map((n) => nodeDump<{ pods: DumpPod[] }>(n))) : [await getJson<{ pods: DumpPod[] }>(`${ADMIN}/config_dump`)];
  for (const d of dumps) for (const p of d.pods) enrolled.add(`${p.namespace}/${p.name}`);
  const pods = await listPods({ stateDir: sd });
  printTable(['POD', 'IP', 'NODE', 'MESH'], pods.map((p) => [`${p.namespace}/${p.name}`, p.ip, p.node, enrolled.has(`${p.namespace}/${p.name}`) ? 'captured' : 'not enrolled']));
  const nodes = multiNodeNodes(sd);
  process.stdout.write(
    '\n' +
      (multi
        ? `nodes: ${nodes.map((n) => `${n.name} (netns ${n.netns}, ${n.ip})`).join(', ')}\n` +
          `agent admin in a node: ip netns exec <netns> curl -s 127.0.0.1:${PORTS.admin}/config_dump   metrics: 127.0.0.1:${PORTS.metrics}/metrics\n` +
          (local ? '' : `control plane: ${CLUSTER_CP_ADDRESS} in netns nm-cluster (admin: ip netns exec nm-cluster curl -s 127.0.0.1:${PORTS.controlPlaneAdmin}/debug/config-errors)\n`)
        : `agent admin: ${ADMIN}/config_dump   metrics: http://127.0.0.1:${PORTS.metrics}/metrics\n` + (local ? '' : `control plane: ${CP_ADDRESS} (xDS, CA), admin ${CP_ADMIN}/debug/config-errors\n`)) +
      extra +
      `state and logs: ${sd}\n`,
  );
}

/**
 * Removes everything `up` started: the kubelet role first (so nothing recreates pods), the
 * pods and nodes, the agents and control plane, nodemesh-cni, the pins and state; then, on the
 * Kubernetes API, the objects `up` created there (downKube).
 */
export async function down(sd: string, pinRoot = DEFAULT_PIN_ROOT): Promise<void> {
  if (await stopKubelet(sd)) progress('stopped the kubelet');
  // Known before the simulator forgets them: each node's agent has its own pins and files.
  const nodes = multiNodeNodes(sd);
  progress('removing pods');
  await simDown({ stateDir: sd, onProgress: (l) => progress(l) });
  progress('stopping the agent');
  await stopAgent(sd);
  if (await stopControlPlane(sd)) progress('stopped the control plane');
  rmSync(controlPlaneDir(sd), { recursive: true, force: true });
  uninstallChainedPlugin(sd);
  progress(`removing pinned programs under ${[pinRoot, ...nodes.map((n) => n.pinRoot)].join(', ')}`);
  await Redirector.destroyAll(pinRoot);
  await removeNodePins(nodes);
  removeNodeAgentDirs(nodes);
  rmSync(agentPaths(sd).dir, { recursive: true, force: true });
  await downKube(sd);
}
