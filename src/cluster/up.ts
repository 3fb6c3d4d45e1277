// The embedded cluster's up and down: the whole setup (control plane, agents, simulated pods)
// in the background, and its complete removal.
import { existsSync, mkdirSync, readdirSync, rmSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { agentPaths, DEFAULT_PIN_ROOT, PORTS } from '../net/index.js';
import { Redirector } from '../redirect/index.js';
import { listPods, nodeCniDirs, nodePodsCgroup, simDown, simUp } from '../sim/index.js';
import { installNodeCni, uninstallChainedPlugin } from './cni.js';
import { CLUSTER_CP_ADDRESS, multiNodeNodes, nodeDump, removeNodeAgentDirs, removeNodePins, startClusterControlPlane, startNodeAgent } from './nodes.js';
import { UsageError } from '../errors.js';
import { controlPlaneDaemon, controlPlaneDir, controlPlaneFiles, getJson, httpReady, pidIn, startDaemon, stopPid } from './daemon.js';
import { hostNode, issueNodeToken } from './node-tokens.js';


export const ADMIN = `http://127.0.0.1:${PORTS.admin}`;

export function progress(msg: string): void {
  process.stderr.write(`==> ${msg}\n`);
}

export function agentPid(sd: string): number | undefined {
  return pidIn(agentPaths(sd).pidFile);
}

export const CP_ADMIN = `http://127.0.0.1:${PORTS.controlPlaneAdmin}`;
export const CP_ADDRESS = `127.0.0.1:${PORTS.controlPlane}`;

/** Starts the agent in local mode (pod metadata from `dir`, no control plane). */
export async function startAgent(dir: string, sd: string, extra: string[] = []): Promise<number> {
  return startAgentWith(sd, ['--config', dir, ...extra]);
}

/**
 * Starts the agent against the embedded control plane that `startControlPlane` ran, with the
 * host node's own token (its name and pod subnet), issued here as a node's bootstrap would.
 */
export async function startAgentWithControlPlane(sd: string, extra: string[] = []): Promise<number> {
  const cp = controlPlaneDir(sd);
  const node = hostNode(sd);
  const token = issueNodeToken(sd, node.name, node.podCidrs, sd);
  return startAgentWith(sd, ['--control-plane', CP_ADDRESS, '--node', node.name, '--token-file', token, '--root-cert', join(cp, 'root-cert.pem'), ...extra]);
}

async function startAgentWith(sd: string, argsIn: string[]): Promise<number> {
  const paths = agentPaths(sd);
  // The host node's pods live under the simulator's kubepods cgroup: observed for capture.
  const observe = nodePodsCgroup({ name: hostNode(sd).name, netnsPath: null });
  const args = observe && !argsIn.includes('--observe-cgroup') ? ['--observe-cgroup', observe, ...argsIn] : argsIn;
  mkdirSync(paths.dir, { recursive: true });
  // The host node's init container step: nodemesh-cni chained into its conflist, relaying to
  // the socket this agent will listen on.
  if (!args.includes('--no-install-cni')) installNodeCni(nodeCniDirs(sd), resolve(paths.cniSocket));
  return startDaemon({ what: 'agent', args: ['agent', '--state-dir', sd, ...args], logFile: paths.logFile, pidFile: paths.pidFile, ready: httpReady(`${ADMIN}/healthz/ready`) });
}

export async function stopAgent(sd: string): Promise<boolean> {
  return stopPid(agentPid(sd));
}

/** Starts the control plane for host mode: pods without spec.nodeName run on the host node. */
export async function startControlPlane(dir: string, sd: string): Promise<number> {
  return startDaemon({ ...controlPlaneDaemon(dir, sd, ['--default-node', hostNode(sd).name]), ready: httpReady(`${CP_ADMIN}/healthz/ready`) });
}

export async function stopControlPlane(sd: string): Promise<boolean> {
  const file = controlPlaneFiles(sd).pidFile;
  const stopped = await stopPid(pidIn(file));
  rmSync(file, { force: true });
  return stopped;
}

interface DumpPod {
  namespace: string;
  name: string;
  ip: string;
}

/** Brings everything up; returns once every ambient pod's traffic is captured. */
export async function up(dirArg: string, sd: string, opts: { local?: boolean } = {}): Promise<void> {
  const dir = resolve(dirArg);
  if (!existsSync(dir)) throw new UsageError(`config directory ${dir} does not exist`);
  // A failed first `up` leaves nothing behind (no namespaces, pins or daemons holding the
  // node's ports); a failed re-run on a mesh that is up leaves that mesh as it was.
  const fresh = !existsSync(sd) || readdirSync(sd).length === 0;
  try {
    await upSteps(dir, sd, opts);
  } catch (err) {
    if (!fresh) {
      progress(`bringing the mesh up failed; what was up before is left running ('nodemesh down --state-dir ${sd}' removes it all)`);
      throw err;
    }
    progress('bringing the mesh up failed; removing what was started');
    await down(sd).catch((e: unknown) => progress(`removing it failed too (${(e as Error).message}); run 'nodemesh down --state-dir ${sd}'`));
    throw err;
  }
}

async function upSteps(dir: string, sd: string, opts: { local?: boolean }): Promise<void> {
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
  const dump = await getJson<{ pods: DumpPod[] }>(`${ADMIN}/config_dump`);
  const enrolled = new Set(dump.pods.map((p) => `${p.namespace}/${p.name}`));
  const pods = await listPods({ stateDir: sd });
  const rows = pods.map((p) => [`${p.namespace}/${p.name}`, p.ip, p.node, enrolled.has(`${p.namespace}/${p.name}`) ? 'captured' : 'not enrolled']);
  printTable(['POD', 'IP', 'NODE', 'MESH'], rows);
  process.stdout.write(`\nagent admin: ${ADMIN}/config_dump   metrics: http://127.0.0.1:${PORTS.metrics}/metrics\n${opts.local ? '' : `control plane: ${CP_ADDRESS} (xDS, CA), admin ${CP_ADMIN}/debug/config-errors\n`}state and logs: ${sd}\n`);
}

/** Multi-node: the control plane on the cluster network, one agent per node netns, then the pods. */
async function upNodes(dir: string, sd: string, opts: { local?: boolean }): Promise<void> {
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
  const enrolled = new Set<string>();
  for (const n of nodes) for (const p of (await nodeDump<{ pods: DumpPod[] }>(n)).pods) enrolled.add(`${p.namespace}/${p.name}`);
  const pods = await listPods({ stateDir: sd });
  printTable(['POD', 'IP', 'NODE', 'MESH'], pods.map((p) => [`${p.namespace}/${p.name}`, p.ip, p.node, enrolled.has(`${p.namespace}/${p.name}`) ? 'captured' : 'not enrolled']));
  process.stdout.write(
    `\nnodes: ${nodes.map((n) => `${n.name} (netns ${n.netns}, ${n.ip})`).join(', ')}\n` +
      `agent admin in a node: ip netns exec <netns> curl -s 127.0.0.1:${PORTS.admin}/config_dump   metrics: 127.0.0.1:${PORTS.metrics}/metrics\n` +
      (opts.local ? '' : `control plane: ${CLUSTER_CP_ADDRESS} in netns nm-cluster (admin: ip netns exec nm-cluster curl -s 127.0.0.1:${PORTS.controlPlaneAdmin}/debug/config-errors)\n`) +
      `state and logs: ${sd}\n`,
  );
}

export async function down(sd: string, pinRoot = DEFAULT_PIN_ROOT): Promise<void> {
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
}

export function printTable(head: string[], rows: string[][]): void {
  const w = head.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (r: string[]) => r.map((c, i) => c.padEnd(w[i]!)).join('  ').trimEnd();
  process.stdout.write([line(head), ...rows.map(line)].join('\n') + '\n');
}
