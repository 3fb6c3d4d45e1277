// The multi-node embedded setup behind `nodemesh up` when Pods name nodes: the control plane
// runs on the simulated cluster network (netns nm-cluster, 10.240.0.254), one agent runs in
// each node's netns (`sim agent`'s command), and everything an operator inspects is reached by
// entering those namespaces. Nothing is routed from the host into the cluster network.
import { spawn } from 'node:child_process';
import { mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { agentPaths, DEFAULT_PIN_ROOT, PORTS } from '../net/index.js';
import { Redirector } from '../redirect/index.js';
import { CLUSTER_NETNS, CLUSTER_SERVICE_IP, DEFAULT_NODE, listNodes, nodeAgentCommand, nsenter, type SimNodeInfo } from '../sim/index.js';
import { installNodeCni } from './cni.js';
import { controlPlaneDaemon, controlPlaneDir, pidIn, startDaemon, stopPid, type ControlPlaneSource } from './daemon.js';
import { issueNodeToken } from './node-tokens.js';

/** The control plane's gRPC address on the cluster network. */
export const CLUSTER_CP_ADDRESS = `${CLUSTER_SERVICE_IP}:${PORTS.controlPlane}`;
export const CLUSTER_NETNS_PATH = `/run/netns/${CLUSTER_NETNS}`;

/** Runs `curl` inside a netns and resolves with its status and body (never rejects). */
export function curlIn(netnsPath: string, url: string, timeoutS = 2): Promise<{ code: number; body: string }> {
  return new Promise((resolve) => {
    const child = spawn(nsenter(), [`--net=${netnsPath}`, '--', 'curl', '-sS', '-f', '-m', String(timeoutS), url], { stdio: ['ignore', 'pipe', 'pipe'] });
    let body = '';
    child.stdout.on('data', (d: Buffer) => (body += d));
    child.on('error', () => resolve({ code: -1, body: '' }));
    child.on('close', (code) => resolve({ code: code ?? -1, body }));
  });
}

export async function curlJsonIn<T>(netnsPath: string, url: string): Promise<T> {
  const r = await curlIn(netnsPath, url);
  if (r.code !== 0) throw new Error(`GET ${url} in ${netnsPath}: curl exited ${r.code}`);
  return JSON.parse(r.body) as T;
}

/**
 * Captures the TCP packets on every port of the cluster network (tcpdump -A: headers and
 * payload as text) while `fn` runs, then until `until(text)` holds or `waitMs` has passed,
 * plus 200 ms for the last packets. `log` is tcpdump's stderr.
 */
export async function captureClusterTcp(fn: () => void, opts: { until?: (text: string) => boolean; waitMs?: number } = {}): Promise<{ text: string; log: string }> {
  const dump = spawn(nsenter(), [`--net=${CLUSTER_NETNS_PATH}`, '--', 'tcpdump', '-i', 'any', '-l', '-nn', '-A', 'tcp'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let text = '';
  let log = '';
  dump.stdout.on('data', (d: Buffer) => (text += d.toString('latin1')));
  dump.stderr.on('data', (d: Buffer) => (log += d));
  for (let i = 0; i < 100 && !log.includes('listening'); i++) await new Promise((r) => setTimeout(r, 50));
  fn();
  const deadline = Date.now() + (opts.waitMs ?? 300);
  while (Date.now() < deadline && !opts.until?.(text)) await new Promise((r) => setTimeout(r, 50));
  await new Promise((r) => setTimeout(r, 200));
  dump.kill('SIGINT');
  await new Promise((r) => dump.once('close', r));
  return { text, log };
}

/**
 * Starts the control plane inside the cluster network's netns, serving the nodes on
 * 10.240.0.254:15012, on `source`: a config dir (pods without spec.nodeName run on the
 * simulator's default node), or a kubeconfig (the API places every pod; `env` for its client).
 * `extraArgs` go after those (e.g. `--admin 0.0.0.0:15014`).
 */
export function startClusterControlPlane(source: ControlPlaneSource, sd: string, extraArgs: string[] = [], env?: NodeJS.ProcessEnv): Promise<number> {
  const placement = typeof source === 'string' ? ['--default-node', DEFAULT_NODE] : [];
  return startDaemon({
    ...controlPlaneDaemon(source, sd, ['--listen', CLUSTER_CP_ADDRESS, ...placement, ...extraArgs]),
    ...(env ? { env } : {}),
    netnsPath: CLUSTER_NETNS_PATH,
    ready: async () => (await curlIn(CLUSTER_NETNS_PATH, `http://127.0.0.1:${PORTS.controlPlaneAdmin}/healthz/ready`, 1)).code === 0,
  });
}

/** A node's init container step: nodemesh-cni chained into the node's conflist, relaying to its agent's socket. */
export function installNodeAgentCni(node: SimNodeInfo, sd: string): void {
  const c = nodeAgentCommand(node.name, [], { stateDir: sd });
  if (c.installCni) installNodeCni(c.installCni, c.installCni.agentSocket);
}

/**
 * Starts a node's agent in its netns with `sim agent`'s per-node flags, after the node's init
 * container step (nodemesh-cni chained into the node's conflist). With `local`, it reads pod
 * metadata from `dir`; otherwise it takes everything from the cluster's control plane,
 * authenticated by `tokenFile` (on Kubernetes its pod's projected ServiceAccount token), else by
 * its own node's token (bound to the node's name and pod subnet).
 */
export function startNodeAgent(node: SimNodeInfo, sd: string, dir: string, opts: { local?: boolean; extra?: string[]; tokenFile?: string } = {}): Promise<number> {
  const cp = controlPlaneDir(sd);
  const source = opts.local
    ? ['--config', dir]
    : ['--control-plane', CLUSTER_CP_ADDRESS, '--token-file', opts.tokenFile ?? issueNodeToken(sd, node.name, [node.subnet], node.agentStateDir), '--root-cert', join(cp, 'root-cert.pem')];
  const c = nodeAgentCommand(node.name, [...source, ...(opts.extra ?? [])], { stateDir: sd });
  if (c.installCni) installNodeCni(c.installCni, c.installCni.agentSocket);
  const { dir: agentDir, logFile, pidFile } = agentPaths(node.agentStateDir);
  mkdirSync(agentDir, { recursive: true });
  // argv[0] is the launcher and argv[1] 'agent': startDaemon runs main.js itself.
  return startDaemon({
    what: `agent of node ${node.name}`,
    args: c.argv.slice(1),
    logFile,
    pidFile,
    netnsPath: node.netnsPath!,
    env: c.env,
    ready: async () => (await curlIn(node.netnsPath!, `http://127.0.0.1:${PORTS.ready}/healthz/ready`, 1)).code === 0,
  });
}

export function nodeAgentPid(node: SimNodeInfo): number | undefined {
  return pidIn(agentPaths(node.agentStateDir).pidFile);
}

export function stopNodeAgent(node: SimNodeInfo): Promise<boolean> {
  return stopPid(nodeAgentPid(node));
}

/** The agent's /config_dump on a node. */
export function nodeDump<T = Record<string, unknown>>(node: SimNodeInfo): Promise<T> {
  return curlJsonIn<T>(node.netnsPath!, `http://127.0.0.1:${PORTS.admin}/config_dump`);
}

/** What `down` must remove per node once the simulator is gone: pinned programs. */
export async function removeNodePins(nodes: SimNodeInfo[]): Promise<void> {
  for (const n of nodes) await Redirector.destroyAll(n.pinRoot ?? DEFAULT_PIN_ROOT);
}

export function multiNodeNodes(sd: string): SimNodeInfo[] {
  return listNodes({ stateDir: sd }).filter((n) => n.netnsPath !== null);
}

export function removeNodeAgentDirs(nodes: SimNodeInfo[]): void {
  for (const n of nodes) rmSync(agentPaths(n.agentStateDir).dir, { recursive: true, force: true });
}
