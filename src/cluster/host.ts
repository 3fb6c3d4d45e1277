// The host mode of the embedded cluster: the control plane and the one node's agent as
// background daemons in the root netns, on the well-known ports, and the progress lines and
// tables `nodemesh up` prints.
import { mkdirSync, rmSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { agentPaths, PORTS } from '../net/index.js';
import { nodeCniDirs, nodePodsCgroup } from '../sim/index.js';
import { installNodeCni } from './cni.js';
import { controlPlaneDaemon, controlPlaneDir, controlPlaneFiles, httpReady, pidIn, startDaemon, stopPid, type ControlPlaneSource } from './daemon.js';
import { hostNode, issueNodeToken } from './node-tokens.js';

export const ADMIN = `http://127.0.0.1:${PORTS.admin}`;
export const CP_ADMIN = `http://127.0.0.1:${PORTS.controlPlaneAdmin}`;
export const CP_ADDRESS = `127.0.0.1:${PORTS.controlPlane}`;

export function progress(msg: string): void {
  process.stderr.write(`==> ${msg}\n`);
}

export function printTable(head: string[], rows: string[][]): void {
  const w = head.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (r: string[]) => r.map((c, i) => c.padEnd(w[i]!)).join('  ').trimEnd();
  process.stdout.write([line(head), ...rows.map(line)].join('\n') + '\n');
}

export function agentPid(sd: string): number | undefined {
  return pidIn(agentPaths(sd).pidFile);
}

/** Starts the agent in local mode (pod metadata from `dir`, no control plane). */
export async function startAgent(dir: string, sd: string, extra: string[] = []): Promise<number> {
  return startAgentWith(sd, ['--config', dir, ...extra]);
}

/**
 * Starts the agent against the embedded control plane that `startControlPlane` ran. Its
 * credential is `tokenFile` (on Kubernetes: its pod's projected ServiceAccount token), else the
 * host node's own node token (its name and pod subnet), issued here as a node's bootstrap would.
 */
export async function startAgentWithControlPlane(sd: string, extra: string[] = [], tokenFile?: string): Promise<number> {
  const cp = controlPlaneDir(sd);
  const node = hostNode(sd);
  const token = tokenFile ?? issueNodeToken(sd, node.name, node.podCidrs, sd);
  return startAgentWith(sd, ['--control-plane', CP_ADDRESS, '--node', node.name, '--token-file', token, '--root-cert', join(cp, 'root-cert.pem'), ...extra]);
}

/** The host node's init container step: nodemesh-cni chained into its conflist, relaying to the agent's socket. */
export function installHostCni(sd: string): void {
  installNodeCni(nodeCniDirs(sd), resolve(agentPaths(sd).cniSocket));
}

async function startAgentWith(sd: string, argsIn: string[]): Promise<number> {
  const paths = agentPaths(sd);
  // The host node's pods live under the simulator's kubepods cgroup: observed for capture.
  const observe = nodePodsCgroup({ name: hostNode(sd).name, netnsPath: null });
  const args = observe && !argsIn.includes('--observe-cgroup') ? ['--observe-cgroup', observe, ...argsIn] : argsIn;
  mkdirSync(paths.dir, { recursive: true });
  if (!args.includes('--no-install-cni')) installHostCni(sd);
  return startDaemon({ what: 'agent', args: ['agent', '--state-dir', sd, ...args], logFile: paths.logFile, pidFile: paths.pidFile, ready: httpReady(`${ADMIN}/healthz/ready`) });
}

export async function stopAgent(sd: string): Promise<boolean> {
  return stopPid(agentPid(sd));
}

/**
 * Starts the control plane for host mode on `source` (a config dir: pods without spec.nodeName
 * run on the host node; or a kubeconfig, and the API places every pod).
 */
export async function startControlPlane(source: ControlPlaneSource, sd: string): Promise<number> {
  const extra = typeof source === 'string' ? ['--default-node', hostNode(sd).name] : [];
  return startDaemon({ ...controlPlaneDaemon(source, sd, extra), ready: httpReady(`${CP_ADMIN}/healthz/ready`) });
}

export async function stopControlPlane(sd: string): Promise<boolean> {
  const file = controlPlaneFiles(sd).pidFile;
  const stopped = await stopPid(pidIn(file));
  rmSync(file, { force: true });
  return stopped;
}
