// `sim up`: validate a config dir against the current state, then create the pods that are
// not up yet. All checks run before anything is created; a failure part-way removes what
// this run created, so a bad input never leaves half a pod.
import { rmSync } from 'node:fs';
import { hostname } from 'node:os';
import { resolve } from 'node:path';
import { NodemeshError } from '../errors.js';
import { loadConfigDirStrict, type Pod } from '../k8s/index.js';
import { findCgroup2Root, listPodCgroups, simCgroupParent } from './cgroup.js';
import { buildCniArgs } from './cni.js';
import { conflistBridge, conflistSubnet, ensureConflist, loopbackConflist, readNetConf } from './conflist.js';
import { isLinkName, linkExists, listSimNetns, readIpForward } from './host.js';
import { cniSearchPath, DEFAULT_SUBNET, findPlugin, SIM_BRIDGE, simPaths, type SimPaths } from './paths.js';
import { containerPlans, createPod, podAlive, podSpecHash, restartPod, teardownPod, type Progress } from './pod.js';
import { finalizeIfEmpty } from './down.js';
import { lockSim, readSimState, STATE_VERSION, writeSimState, type SimNode, type SimPod, type SimState } from './state.js';
import { parseSubnet, unassignableReason } from './subnet.js';
import { requireRoot, toPodInfo, type SimPodInfo } from './query.js';

export interface SimUpOptions {
  stateDir?: string;
  /** Pod subnet for a new node config (default 10.244.0.0/24). */
  subnet?: string;
  /** Directories searched after /usr/lib/cni (default <repo>/native/build). */
  cniBinDirs?: string[];
  /** Per pod: processes started and declared ports accepting (default 30 s). */
  readyTimeoutMs?: number;
  /** The default node's name (default os.hostname()). */
  nodeName?: string;
  /** Receives one line per long step; the CLI prints them on stderr. */
  onProgress?: Progress;
}

export interface SimUpResult {
  created: SimPodInfo[];
  restarted: SimPodInfo[];
  unchanged: SimPodInfo[];
  /** Every pod of the simulator after this run, including ones from earlier runs. */
  pods: SimPodInfo[];
}

type Plan = { pod: Pod; hash: string; node: string; action: 'create' | 'recreate' | 'unchanged' | 'restart'; existing?: SimPod };

function problem(pod: Pod, message: string): string {
  return `${pod.source.file}:${pod.source.line}: Pod ${pod.metadata.namespace}/${pod.metadata.name}: ${message}`;
}

/** Simulator objects on the host that no state records: another state dir's, or a crash's. */
function unrecordedObjects(root: string): string[] {
  return [
    ...listSimNetns().map((n) => `netns ${n}`),
    ...(linkExists(SIM_BRIDGE) ? [`bridge ${SIM_BRIDGE}`] : []),
    ...listPodCgroups(root).map((c) => `cgroup ${c}`),
  ];
}

export async function simUp(dir: string, opts: SimUpOptions = {}): Promise<SimUpResult> {
  requireRoot('sim up');
  const progress = opts.onProgress ?? (() => undefined);
  const configDir = resolve(dir);
  const cfg = loadConfigDirStrict(dir); // file:line errors, before anything else
  const paths = simPaths(opts.stateDir);
  const release = await lockSim(paths);
  try {
    return await upLocked(cfg.pods, configDir, paths, opts, progress);
  } finally {
    release();
  }
}

async function upLocked(pods: Pod[], configDir: string, paths: SimPaths, opts: SimUpOptions, progress: Progress): Promise<SimUpResult> {
  const prior = readSimState(paths);
  const cgroupRoot = prior?.cgroupRoot ?? findCgroup2Root();
  if (!prior) {
    const stray = unrecordedObjects(cgroupRoot);
    if (stray.length > 0) {
      throw new NodemeshError(
        'NM_ERR_SIM_STATE',
        `simulator objects exist that ${paths.stateFile} does not record: ${stray.join(', ')}. Another simulator (a different --state-dir) is running, or a crashed run left them; if it is a leftover, \`nodemesh sim down --state-dir ${paths.stateDir}\` removes them`,
      );
    }
  }

  // The node's CNI config: written if absent, otherwise the operator's (or the agent's) file.
  const confFile = ensureConflist(paths.netDir, { subnet: opts.subnet ?? DEFAULT_SUBNET, ipamDir: paths.ipamDir });
  const { list } = readNetConf(paths.netDir);
  const subnetText = conflistSubnet(list) ?? prior?.nodes[0]?.subnet ?? DEFAULT_SUBNET;
  if (opts.subnet !== undefined && opts.subnet !== subnetText) {
    throw new NodemeshError('NM_ERR_USAGE', `--subnet ${opts.subnet} differs from the node's CNI config ${confFile}, which uses ${subnetText}; run \`nodemesh sim down --purge\` to start over with a new subnet`);
  }
  const subnet = parseSubnet(subnetText);
  const bridge = conflistBridge(list) ?? SIM_BRIDGE;
  if (!isLinkName(bridge)) throw new NodemeshError('NM_ERR_CNI', `bridge name ${JSON.stringify(bridge)} is not a valid interface name`, { where: confFile });
  const node: SimNode = {
    name: prior?.nodes[0]?.name ?? opts.nodeName ?? hostname(),
    bridge,
    subnet: subnetText,
    netDir: paths.netDir,
    ipamDir: paths.ipamDir,
    cniPath: opts.cniBinDirs || !prior?.nodes[0] ? cniSearchPath(opts.cniBinDirs) : prior.nodes[0].cniPath,
  };

  // ---- plan and validate: nothing on the host changes in this block ----
  const problems: string[] = [];
  let firstCode: 'NM_ERR_CONFIG_CONFLICT' | 'NM_ERR_CONFIG_INVALID' | 'NM_ERR_CNI' | undefined;
  const fail = (code: NonNullable<typeof firstCode>, msg: string) => {
    firstCode ??= code;
    problems.push(msg);
  };
  const plans: Plan[] = [];
  for (const pod of pods) {
    const nodeName = pod.spec.nodeName ?? node.name;
    const hash = podSpecHash(pod, nodeName);
    const existing = prior?.pods.find((p) => p.namespace === pod.metadata.namespace && p.name === pod.metadata.name);
    let action: Plan['action'] = 'create';
    if (existing && existing.phase === 'Running') {
      if (existing.specHash !== hash) {
        fail('NM_ERR_CONFIG_CONFLICT', problem(pod, `is already up with a different spec (pods are immutable); run \`nodemesh sim down\` first to recreate it`));
        continue;
      }
      // Dead processes are restarted, as the kubelet does for restartPolicy Always (the
      // default); with Never or OnFailure the pod is left as it is.
      const policy = (pod.raw.spec as { restartPolicy?: unknown } | undefined)?.restartPolicy;
      action = podAlive(existing) || policy === 'Never' || policy === 'OnFailure' ? 'unchanged' : 'restart';
    } else if (existing) {
      action = 'recreate'; // a crashed run left it half-created
    }
    try {
      buildCniArgs({ namespace: pod.metadata.namespace, name: pod.metadata.name, uid: pod.metadata.uid, containerId: 'x' });
      if (!/^[A-Za-z0-9-]+$/.test(pod.metadata.uid)) throw new Error(`metadata.uid ${JSON.stringify(pod.metadata.uid)} cannot name a cgroup (letters, digits and - only)`);
    } catch (e) {
      fail('NM_ERR_CONFIG_INVALID', problem(pod, (e as Error).message));
      continue;
    }
    plans.push({ pod, hash, node: nodeName, action, ...(existing ? { existing } : {}) });
  }
  // Identity and address conflicts, against running pods and within this dir.
  const keep = (prior?.pods ?? []).filter((p) => !plans.some((pl) => pl.existing === p && pl.action === 'recreate'));
  const ipOwner = new Map<string, string>();
  const uidOwner = new Map<string, string>();
  for (const p of keep) {
    if (p.ip) ipOwner.set(p.ip, `${p.namespace}/${p.name}`);
    uidOwner.set(p.uid, `${p.namespace}/${p.name}`);
  }
  for (const pl of plans) {
    if (pl.action !== 'create' && pl.action !== 'recreate') continue;
    const id = `${pl.pod.metadata.namespace}/${pl.pod.metadata.name}`;
    const uidHolder = uidOwner.get(pl.pod.metadata.uid);
    if (uidHolder && uidHolder !== id) fail('NM_ERR_CONFIG_CONFLICT', problem(pl.pod, `metadata.uid ${pl.pod.metadata.uid} is already used by pod ${uidHolder}`));
    uidOwner.set(pl.pod.metadata.uid, id);
    const ip = pl.pod.requestedIp;
    if (ip === undefined) continue;
    const why = unassignableReason(subnet, ip);
    if (why) {
      fail('NM_ERR_CONFIG_INVALID', problem(pl.pod, `status.podIP ${why}`));
      continue;
    }
    const holder = ipOwner.get(ip);
    if (holder && holder !== id) fail('NM_ERR_CONFIG_CONFLICT', problem(pl.pod, `status.podIP ${ip} is already taken by pod ${holder}`));
    ipOwner.set(ip, id);
  }
  const toCreate = plans.filter((p) => p.action === 'create' || p.action === 'recreate');
  if (toCreate.some((p) => p.pod.requestedIp) && !list.plugins.some((p) => p.capabilities?.ips === true)) {
    fail('NM_ERR_CNI', `${confFile}: a pod pins status.podIP but no plugin of the conflist declares the "ips" capability`);
  }
  if (toCreate.length > 0) {
    for (const type of [...loopbackConflist().plugins, ...list.plugins].map((p) => p.type)) {
      if (!findPlugin(type, node.cniPath)) {
        fail('NM_ERR_CNI', `${confFile}: CNI plugin "${type}" not found in CNI_PATH ${node.cniPath.join(':')}${type === 'nodemesh-cni' ? ' (build it: make cni)' : ''}`);
      }
    }
  }
  if (problems.length > 0) {
    throw new NodemeshError(firstCode!, `${problems.length} problem(s); nothing was changed:\n${problems.join('\n')}`, { problems });
  }

  // ---- act ----
  const state: SimState = prior ?? {
    version: STATE_VERSION,
    createdAt: new Date().toISOString(),
    updatedAt: '',
    ipForwardBefore: readIpForward(),
    cgroupRoot,
    cgroupParent: simCgroupParent(cgroupRoot),
    nodes: [],
    pods: [],
  };
  state.nodes = [{ ...state.nodes[0], ...node }, ...state.nodes.slice(1)];
  // With no state nothing can hold an address: host-local data left by a crash would only
  // make pinned IPs look taken.
  if (!prior) rmSync(paths.ipamDir, { recursive: true, force: true });
  writeSimState(paths, state);

  const created: SimPod[] = [];
  const restarted: SimPod[] = [];
  const readyTimeoutMs = opts.readyTimeoutMs ?? 30_000;
  // Pinned addresses first, so a dynamically allocated pod cannot take one of them.
  const ordered = [...toCreate.filter((p) => p.pod.requestedIp), ...toCreate.filter((p) => !p.pod.requestedIp)];
  try {
    for (const pl of ordered) {
      if (pl.action === 'recreate' && pl.existing) {
        progress(`pod ${pl.existing.namespace}/${pl.existing.name}: left half-created by an earlier run; recreating`);
        await teardownPod(state, paths, pl.existing, progress);
      }
      const rec = await createPod(state, paths, { pod: pl.pod, plans: containerPlans(pl.pod, configDir), node, reportedNode: pl.node, specHash: pl.hash, readyTimeoutMs }, progress);
      created.push(rec);
      progress(`pod ${rec.namespace}/${rec.name}: ready (${rec.ip})`);
    }
    for (const pl of plans.filter((p) => p.action === 'restart')) {
      await restartPod(state, paths, pl.existing!, containerPlans(pl.pod, configDir), readyTimeoutMs, progress);
      restarted.push(pl.existing!);
    }
  } catch (e) {
    // Nothing half-created: undo this run's pods, and the node itself if it is now empty.
    for (const rec of created.reverse()) await teardownPod(state, paths, rec, progress).catch(() => undefined);
    await finalizeIfEmpty(state, paths, progress).catch(() => undefined);
    throw e;
  }
  const unchanged = plans.filter((p) => p.action === 'unchanged').map((p) => p.existing!);
  for (const u of unchanged) progress(`pod ${u.namespace}/${u.name}: already up, unchanged`);
  await finalizeIfEmpty(state, paths, progress);
  return {
    created: created.map(toPodInfo),
    restarted: restarted.map(toPodInfo),
    unchanged: unchanged.map(toPodInfo),
    pods: state.pods.map(toPodInfo).sort((a, b) => a.namespace.localeCompare(b.namespace) || a.name.localeCompare(b.name)),
  };
}
