// One simulated pod's lifecycle: create (cgroup, netns, CNI ADD, processes, readiness) and
// teardown (kill, CNI DEL, netns, cgroup), each step recorded so a crash leaves a trail.
import { createHash } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import { resolve } from 'node:path';
import { CniError } from '../errors.js';
import type { Pod } from '../k8s/index.js';
import { cgroupPids, cgroupRelativePath, createCgroup, killCgroup, podCgroupPath, removeCgroupChain } from './cgroup.js';
import { buildCniArgs, cniAdd, cniDel, resultIPv4, type CniRuntime } from './cni.js';
import { conflistBridge, findNetConfFile, loopbackConflist, readNetConf, type CniConfList } from './conflist.js';
import { addNetns, deleteNetns, hardenBridge, linkExists, netnsExists, netnsNameFor, netnsPath } from './host.js';
import { setNetnsSysctls } from './network.js';
import { podLogPath, type SimPaths } from './paths.js';
import { startContainer, waitPodReady, type PodSandbox, type StartedContainer } from './process.js';
import { writeSimState, type SimContainer, type SimNode, type SimPod, type SimState } from './state.js';
import { parseSubnet } from './subnet.js';

export const POD_IFNAME = 'eth0';

/** How a container of a Pod runs in the simulator. */
export interface ContainerPlan {
  name: string;
  argv: string[];
  env: Record<string, string>;
  cwd: string;
  ports: number[];
}

/** The containers of a Pod as processes: command + args, env, and the working directory. */
export function containerPlans(pod: Pod, configDir: string): ContainerPlan[] {
  const rawContainers = (pod.raw.spec as { containers?: { workingDir?: unknown }[] } | undefined)?.containers ?? [];
  return pod.spec.containers.map((c, i) => {
    const wd = rawContainers[i]?.workingDir;
    return {
      name: c.name,
      argv: [...c.command, ...c.args],
      env: c.env,
      // No image filesystem: the config dir stands in for it, so a command can name files
      // shipped beside the YAML (a relative workingDir is taken from there too).
      cwd: typeof wd === 'string' && wd !== '' ? resolve(configDir, wd) : resolve(configDir),
      ports: c.ports.filter((p) => p.protocol.toUpperCase() === 'TCP').map((p) => p.containerPort),
    };
  });
}

/** What decides whether a pod that is already up can be left alone by a second `sim up`. */
export function podSpecHash(pod: Pod, node: string): string {
  const rawContainers = (pod.raw.spec as { containers?: { workingDir?: unknown }[] } | undefined)?.containers ?? [];
  const basis = {
    uid: pod.metadata.uid,
    node,
    requestedIp: pod.requestedIp ?? null,
    containers: pod.spec.containers.map((c, i) => ({
      name: c.name,
      command: c.command,
      args: c.args,
      env: c.env,
      ports: c.ports,
      workingDir: rawContainers[i]?.workingDir ?? null,
    })),
  };
  return createHash('sha256').update(JSON.stringify(basis)).digest('hex').slice(0, 16);
}

/** The sandbox id: derived from the netns name, so a stateless `sim down` can rebuild it. */
export function containerIdFor(netns: string): string {
  return createHash('sha256').update(`nodemesh-sim/${netns}`).digest('hex');
}

export type Progress = (line: string) => void;

function sandbox(p: SimPod): PodSandbox {
  return { namespace: p.namespace, name: p.name, netnsPath: p.netnsPath, cgroup: p.cgroup };
}

function runtimeFor(p: SimPod, node: SimNode, ifName: string, capabilityArgs?: Record<string, unknown>): CniRuntime {
  return {
    containerId: p.containerId,
    netnsPath: p.netnsPath,
    ifName,
    args: buildCniArgs(p),
    cniPath: node.cniPath,
    ...(node.netnsPath ? { hostNetnsPath: node.netnsPath } : {}),
    label: `${p.namespace}/${p.name}`,
    ...(capabilityArgs ? { capabilityArgs } : {}),
  };
}

export interface CreatePodInput {
  pod: Pod;
  plans: ContainerPlan[];
  node: SimNode;
  reportedNode: string;
  specHash: string;
  readyTimeoutMs: number;
}

/** The state record of a pod about to be created: every name follows from its namespace/name and uid. */
function newPodRecord(state: SimState, paths: SimPaths, input: CreatePodInput): SimPod {
  const { pod, node } = input;
  const ns = pod.metadata.namespace;
  const name = pod.metadata.name;
  const netns = netnsNameFor(ns, name, (n) => netnsExists(n) || state.pods.some((p) => p.netns === n));
  return {
    namespace: ns,
    name,
    uid: pod.metadata.uid,
    node: input.reportedNode,
    hostNode: node.name,
    phase: 'Creating',
    specHash: input.specHash,
    ip: null,
    ...(pod.requestedIp ? { requestedIp: pod.requestedIp } : {}),
    containerId: containerIdFor(netns),
    ifName: POD_IFNAME,
    netns,
    netnsPath: netnsPath(netns),
    cgroup: podCgroupPath(state.cgroupRoot, pod.metadata.uid, node.netns ? node.name : undefined),
    workingDir: input.plans[0]?.cwd ?? '/',
    log: podLogPath(paths, ns, name),
    containers: [],
    pids: [],
    source: { file: pod.source.file, line: pod.source.line },
    createdAt: new Date().toISOString(),
  };
}

/**
 * A pod's IPv6 as a node gives it: on, whatever the host's defaults, so eth0 gets its kernel
 * link-local fe80:: address (and lo its ::1) and a test can see IPv6 that bypasses the mesh.
 * Router advertisements are ignored, so no pod takes a route out from one sent on the bridge
 * (there is no router; a pod could pose as one). Set before CNI ADD: eth0 takes `default`.
 * Optional: a kernel without IPv6 has none of these.
 */
const POD_IPV6 = ['all', 'default'].flatMap((c) => [
  { key: `net.ipv6.conf.${c}.disable_ipv6`, value: '0', optional: true },
  { key: `net.ipv6.conf.${c}.accept_ra`, value: '0', optional: true },
]);

/** The host-side links of a CNI result other than the bridge (no sandbox): the pod's veth host end. */
function hostLinks(result: Record<string, unknown>, bridge: string): string[] {
  const ifaces = Array.isArray(result.interfaces) ? (result.interfaces as { name?: unknown; sandbox?: unknown }[]) : [];
  return ifaces.filter((i) => typeof i.name === 'string' && i.name !== bridge && !i.sandbox).map((i) => i.name as string);
}

/**
 * CNI ADD of the pod's sandbox, as containerd does it: the loopback network on lo, then the
 * node's conflist (read anew) on eth0. Returns the pod's IPv4 address from the result.
 */
async function addPodNetwork(state: SimState, rec: SimPod, input: CreatePodInput, label: string, progress: Progress): Promise<string> {
  const { pod, node } = input;
  const { list } = readNetConf(node.netDir);
  progress(`${label}: CNI ADD loopback, then ${list.plugins.map((p) => p.type).join(' → ')}`);
  await cniAdd(loopbackConflist(), runtimeFor(rec, node, 'lo'));
  const subnet = parseSubnet(node.subnet);
  const caps: Record<string, unknown> = {
    cgroupPath: cgroupRelativePath(state.cgroupRoot, rec.cgroup),
    'io.kubernetes.cri.pod-annotations': pod.metadata.annotations,
  };
  if (pod.requestedIp) caps.ips = [`${pod.requestedIp}/${subnet.prefix}`];
  // A failed ADD is followed by DEL (in teardownPod), as a runtime does, so IPAM and links
  // are released.
  // Host mode: the bridge is in the root netns, so remember whether we made it and keep it
  // out of the host's netfilter. A node's bridge lives and dies with the node netns.
  const bridge = node.netns ? undefined : conflistBridge(list);
  const bridgeExisted = bridge !== undefined && linkExists(bridge);
  const result = await cniAdd(list, runtimeFor(rec, node, POD_IFNAME, caps));
  rec.cniResult = result;
  if (bridge) {
    if (!bridgeExisted && linkExists(bridge)) node.bridgeCreated = true;
    hardenBridge(bridge, hostLinks(result, bridge));
  }
  const ip = resultIPv4(result, POD_IFNAME);
  if (!ip) throw new CniError(`the CNI result has no IPv4 address for ${POD_IFNAME}: ${JSON.stringify(result)}`, { where: label });
  if (pod.requestedIp && ip !== pod.requestedIp) {
    throw new CniError(`asked for ${pod.requestedIp} (status.podIP) but the CNI chain assigned ${ip}; does the conflist's IPAM plugin declare the "ips" capability?`, { where: label });
  }
  return ip;
}

/** Starts the pod's containers, records their pids, and waits until the pod is ready. */
async function startPodContainers(state: SimState, paths: SimPaths, rec: SimPod, input: CreatePodInput, label: string, progress: Progress): Promise<void> {
  progress(`${label}: ${rec.ip}, starting ${input.plans.map((c) => c.name).join(', ')}`);
  mkdirSync(paths.podsDir, { recursive: true });
  const started: StartedContainer[] = [];
  for (const plan of input.plans) started.push(startContainer(sandbox(rec), plan, rec.log));
  rec.containers = started.map((s, i): SimContainer => ({
    name: s.name,
    pid: s.child.pid ?? -1,
    argv: s.argv,
    ports: s.ports,
    env: input.plans[i]!.env,
    cwd: input.plans[i]!.cwd,
  }));
  rec.pids = rec.containers.map((c) => c.pid);
  writeSimState(paths, state);
  const ports = input.plans.flatMap((c) => c.ports);
  if (ports.length) progress(`${label}: waiting for port ${ports.join(', ')}`);
  await waitPodReady(sandbox(rec), rec.ip!, started, rec.log, input.readyTimeoutMs);
}

/**
 * Creates one pod. The record goes into state (phase Creating) before any host object
 * exists; on failure everything created so far is removed again and the error rethrown.
 */
export async function createPod(state: SimState, paths: SimPaths, input: CreatePodInput, progress: Progress): Promise<SimPod> {
  const rec = newPodRecord(state, paths, input);
  buildCniArgs(rec); // validates the names before anything is created
  state.pods.push(rec);
  writeSimState(paths, state);
  const label = `pod ${rec.namespace}/${rec.name}`;
  try {
    progress(`${label}: creating netns ${rec.netns} and cgroup ${rec.cgroup}`);
    await killCgroup(rec.cgroup); // a crashed run may have left one with this uid
    createCgroup(rec.cgroup);
    await addNetns(rec.netns);
    await setNetnsSysctls(rec.netnsPath, POD_IPV6);
    rec.ip = await addPodNetwork(state, rec, input, label, progress);
    writeSimState(paths, state);
    await startPodContainers(state, paths, rec, input, label, progress);
    rec.phase = 'Running';
    writeSimState(paths, state);
    return rec;
  } catch (e) {
    progress(`${label}: failed, removing what was created`);
    await teardownPod(state, paths, rec, () => undefined).catch(() => undefined);
    throw e;
  }
}

/** Starts the containers of a pod whose processes have all exited (restartPolicy: Always). */
export async function restartPod(state: SimState, paths: SimPaths, rec: SimPod, plans: ContainerPlan[], readyTimeoutMs: number, progress: Progress): Promise<void> {
  progress(`pod ${rec.namespace}/${rec.name}: no process left, restarting its containers`);
  mkdirSync(paths.podsDir, { recursive: true });
  const started = plans.map((plan) => startContainer(sandbox(rec), plan, rec.log));
  rec.containers = started.map((s, i) => ({ name: s.name, pid: s.child.pid ?? -1, argv: s.argv, ports: s.ports, env: plans[i]!.env, cwd: plans[i]!.cwd }));
  rec.pids = rec.containers.map((c) => c.pid);
  writeSimState(paths, state);
  await waitPodReady(sandbox(rec), rec.ip!, started, rec.log, readyTimeoutMs);
}

/** Whether any of the pod's container processes is still in its cgroup. */
export function podAlive(rec: SimPod): boolean {
  const inCg = new Set(cgroupPids(rec.cgroup));
  return rec.containers.some((c) => inCg.has(c.pid));
}

/**
 * Removes one pod: kill its processes (cgroup.kill), CNI DEL in reverse with the cached
 * result, loopback DEL, delete the netns, rmdir its cgroup. Every step runs even when an
 * earlier one failed; the failures come back as warnings. The record leaves the state last.
 */
export async function teardownPod(state: SimState, paths: SimPaths, rec: SimPod, progress: Progress): Promise<string[]> {
  const warnings: string[] = [];
  const node = state.nodes.find((n) => n.name === rec.hostNode) ?? state.nodes[0];
  const label = `pod ${rec.namespace}/${rec.name}`;
  const step = async (what: string, f: () => Promise<void> | void): Promise<void> => {
    try {
      await f();
    } catch (e) {
      warnings.push(`${label}: ${what}: ${(e as Error).message}`);
    }
  };
  progress(`${label}: stopping processes and removing netns ${rec.netns}`);
  await step('kill processes', () => killCgroup(rec.cgroup));
  if (node) {
    let list: CniConfList | undefined;
    await step('read CNI config', () => {
      if (findNetConfFile(node.netDir)) list = readNetConf(node.netDir).list;
    });
    if (list) {
      const l = list;
      await step('CNI DEL', () => cniDel(l, runtimeFor(rec, node, rec.ifName), rec.cniResult));
    }
    await step('CNI DEL loopback', () => cniDel(loopbackConflist(), runtimeFor(rec, node, 'lo')));
  }
  await step('delete netns', () => deleteNetns(rec.netns));
  await step('remove cgroup', () => removeCgroupChain(rec.cgroup, state.cgroupParent));
  const i = state.pods.indexOf(rec);
  if (i >= 0) state.pods.splice(i, 1);
  writeSimState(paths, state);
  return warnings;
}
