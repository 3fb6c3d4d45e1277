// `nodemesh up --kubeconfig FILE <dir>`: the embedded cluster with an API server. The API (a
// cluster's, or a stand-in on 127.0.0.1) holds the objects: `up` creates the directory's there,
// makes each simulated node a Node with a kubelet (`nodemesh sim kubelet`, in the background:
// it runs the Pods bound to the nodes, writes their status and hands them ServiceAccount
// tokens), and runs the control plane and the agents on the API, each agent proving its node
// with its pod's projected token. `down` removes everything local and deletes through the API
// exactly what `up` created.
import { existsSync, rmSync } from 'node:fs';
import { resolve } from 'node:path';
import { ConfigError, TimeoutError, UsageError } from '../errors.js';
import { writeFileAtomic } from '../files.js';
import { loadConfigDirStrict } from '../k8s/index.js';
import { KubeApi, loadKubeConfig, statusOf } from '../kube/index.js';
import { DEFAULT_NODE, listPods, simUp } from '../sim/index.js';
import { controlPlaneDir, pidIn, startDaemon, stopPid } from './daemon.js';
import { installHostCni, progress, startAgentWithControlPlane, startControlPlane } from './host.js';
import { AGENT_TOKEN_VOLUME, ApiWriter, createClusterObjects, createDirObjects, deleteCreated, markAgentReady } from './kube-objects.js';
import { kubePaths, podFilesDir, readKubeRecord, writeKubeRecord, type KubeNode, type KubeRecord } from './kube-record.js';
import { CLUSTER_KUBE_API, relayClientEnv, rewriteKubeconfig } from './kube-relay.js';
import { projectedFile } from './kube-tokens.js';
import { hostNode } from './node-tokens.js';
import { installNodeAgentCni, multiNodeNodes, startClusterControlPlane, startNodeAgent } from './nodes.js';

type Raw = Record<string, unknown>;
const rec = (v: unknown): Raw => (v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as Raw) : {});
/** How long `up` waits for the directory's Pods to be Ready through the API. */
const PODS_READY_MS = 120_000;

/** Loads the kubeconfig and makes one authenticated request; throws naming the server when the API cannot be used. */
export async function checkKubeApi(kubeconfig: string, timeoutMs = 5000): Promise<KubeApi> {
  const api = new KubeApi(loadKubeConfig({ kubeconfig }));
  try {
    await api.request('GET', '/api/v1/namespaces?limit=1', undefined, undefined, timeoutMs);
  } catch (err) {
    const status = statusOf(err);
    const why = status === 401 || status === 403 ? `it refused the kubeconfig's credentials (HTTP ${status})` : (err as Error).message;
    throw new ConfigError('NM_ERR_KUBE_API', `cannot use the Kubernetes API at ${api.server} (kubeconfig ${kubeconfig}): ${why}; is the server running and the kubeconfig's server and user right?`, { status, server: api.server, cause: err });
  }
  return api;
}

/** A state dir holds one kind of mesh: refuse to mix the directory mode and the API mode. */
export function refuseMixedModes(sd: string, kubeconfig: string | undefined): void {
  const r = readKubeRecord(sd);
  if (!kubeconfig && r) throw new UsageError(`the mesh in ${sd} runs on the Kubernetes API at ${r.server} (up --kubeconfig ${r.kubeconfig}); give the same --kubeconfig, or run \`nodemesh down --state-dir ${sd}\` first`);
  if (kubeconfig && r && r.kubeconfig !== kubeconfig) throw new UsageError(`the mesh in ${sd} runs on the API of kubeconfig ${r.kubeconfig}, not ${kubeconfig}; run \`nodemesh down --state-dir ${sd}\` first`);
  if (kubeconfig && !r && (existsSync(controlPlaneDir(sd)) || listPods({ stateDir: sd }).length > 0)) {
    throw new UsageError(`the mesh in ${sd} runs from its directory (up without --kubeconfig); run \`nodemesh down --state-dir ${sd}\` first`);
  }
}

/** Brings the embedded cluster up on the API; returns its record once the directory's Pods are Ready. */
export async function upKube(dir: string, sd: string, kubeconfigArg: string): Promise<KubeRecord> {
  const kubeconfig = resolve(kubeconfigArg);
  refuseMixedModes(sd, kubeconfig);
  progress(`checking the Kubernetes API (kubeconfig ${kubeconfig})`);
  const api = await checkKubeApi(kubeconfig);
  const cfg = loadConfigDirStrict(dir);
  for (const p of cfg.pods.filter((x) => x.requestedIp)) {
    progress(`Pod ${p.metadata.namespace}/${p.metadata.name} pins status.podIP ${p.requestedIp}: through the API the kubelet writes status, so the simulator assigns its IP`);
  }
  const prior = readKubeRecord(sd);
  const sim = await simUp(dir, { stateDir: sd, nodesOnly: true, onProgress: progress });
  const simNodes = multiNodeNodes(sd);
  const host = sim.mode === 'host' ? hostNode(sd) : undefined;
  const nodes: KubeNode[] = host ? [{ name: host.name, podCidr: host.podCidrs[0]!, ip: null }] : simNodes.map((n) => ({ name: n.name, podCidr: n.subnet, ip: n.ip }));
  const defaultNode = host ? host.name : nodes.some((n) => n.name === DEFAULT_NODE) ? DEFAULT_NODE : nodes[0]!.name;
  const paths = kubePaths(sd);
  const record: KubeRecord = { version: 1, kubeconfig, server: api.server, configDir: dir, mode: sim.mode, defaultNode, nodes, agents: prior?.agents ?? [] };
  if (sim.mode === 'nodes') {
    const listen = `${CLUSTER_KUBE_API.host}:${CLUSTER_KUBE_API.port}`;
    const { text, tlsServerName } = rewriteKubeconfig(kubeconfig, listen);
    writeFileAtomic(paths.clusterKubeconfig, text, { mode: 0o600 });
    record.relay = { listen, kubeconfig: paths.clusterKubeconfig, tlsServerName };
  }
  writeKubeRecord(sd, record); // before the first object: `down` must know where to delete

  const w = new ApiWriter(api, sd, progress);
  progress(`creating the Nodes ${nodes.map((n) => n.name).join(', ')} and the agents' Pods and ServiceAccount through the API at ${api.server}`);
  const agents = await createClusterObjects(w, nodes);
  record.agents = nodes.map((n) => {
    const a = agents.get(n.name)!;
    return { node: n.name, pod: a.pod, uid: a.uid, tokenFile: projectedFile(podFilesDir(sd, a.uid), AGENT_TOKEN_VOLUME.name, AGENT_TOKEN_VOLUME.path) };
  });
  writeKubeRecord(sd, record);
  progress(`creating the objects of ${dir} through the API (as kubectl create -f would; Pods once the agents run)`);
  await createDirObjects(w, cfg, { pods: false, defaultNode });

  // Each node's init container step before anything runs pods there: a pod the kubelet starts
  // before its node's agent is up then fails its CNI ADD (and is retried) instead of running uncaptured.
  if (sim.mode === 'nodes') for (const n of simNodes) installNodeAgentCni(n, sd);
  else installHostCni(sd);
  if (prior) await stopKubelet(sd); // a re-run: the kubelet takes the new record
  progress(`starting the kubelet of node(s) ${nodes.map((n) => n.name).join(', ')} (log: ${paths.kubeletLog})${record.relay ? `; it offers the API on the cluster network at ${record.relay.listen}` : ''}`);
  await startDaemon({ what: 'kubelet', args: ['sim', 'kubelet', '--state-dir', sd], logFile: paths.kubeletLog, pidFile: paths.kubeletPid, ready: async () => existsSync(paths.kubeletReady) });
  for (const a of record.agents) {
    if (!existsSync(a.tokenFile)) throw new ConfigError('NM_ERR_KUBE_API', `the kubelet could not get the agent pod of node ${a.node} (${a.pod}) its ServiceAccount token; see ${paths.kubeletLog}`);
  }

  progress(`starting the control plane on the Kubernetes API${record.relay ? `, in netns nm-cluster, through ${record.relay.listen}` : ''} (log: ${controlPlaneDir(sd)}/control-plane.log)`);
  if (record.relay) await startClusterControlPlane({ kubeconfig: record.relay.kubeconfig }, sd, [], relayClientEnv(record.relay.tlsServerName));
  else await startControlPlane({ kubeconfig }, sd);
  for (const a of record.agents) {
    const node = nodes.find((n) => n.name === a.node)!;
    progress(`starting the agent of node ${a.node}, authenticated by pod ${a.pod}'s projected ServiceAccount token; it waits for its first xDS sync`);
    if (sim.mode === 'nodes') await startNodeAgent(simNodes.find((n) => n.name === a.node)!, sd, dir, { tokenFile: a.tokenFile });
    else await startAgentWithControlPlane(sd, [], a.tokenFile);
    await markAgentReady(api, a.pod, node);
  }

  progress(`creating the Pods of ${dir} through the API; those naming no node are bound to ${defaultNode} (pods/binding)`);
  await createDirObjects(w, cfg, { pods: true, defaultNode });
  await waitPodsReady(api, cfg.pods.map((p) => ({ namespace: p.metadata.namespace, name: p.metadata.name })), new Set(nodes.map((n) => n.name)), paths.kubeletLog);
  return record;
}

/** Waits until each pod bound to one of `nodes` reports Ready through the API; pods bound elsewhere are not waited for. */
async function waitPodsReady(api: KubeApi, pods: { namespace: string; name: string }[], nodes: Set<string>, kubeletLog: string): Promise<void> {
  const deadline = Date.now() + PODS_READY_MS;
  let lastReport = 0;
  let waiting = pods;
  for (;;) {
    const why = new Map<string, string>();
    for (const p of waiting) {
      const raw = rec(await api.get(`/api/v1/namespaces/${encodeURIComponent(p.namespace)}/pods/${encodeURIComponent(p.name)}`).catch(() => ({})));
      const node = rec(raw.spec).nodeName;
      if (typeof node === 'string' && !nodes.has(node)) {
        progress(`Pod ${p.namespace}/${p.name} is bound to node ${node}, which is no simulated node: not waited for`);
        continue;
      }
      const ready = (Array.isArray(rec(raw.status).conditions) ? (rec(raw.status).conditions as unknown[]) : []).map(rec).find((c) => c.type === 'Ready');
      if (ready?.status !== 'True') why.set(`${p.namespace}/${p.name}`, typeof ready?.message === 'string' ? ready.message : String(rec(raw.status).phase ?? 'not created'));
    }
    waiting = waiting.filter((p) => why.has(`${p.namespace}/${p.name}`));
    if (waiting.length === 0) return;
    const list = [...why].map(([k, v]) => `${k} (${v})`).join(', ');
    if (Date.now() > deadline) throw new TimeoutError(`${waiting.length} pod(s) not Ready after ${PODS_READY_MS / 1000} s: ${list}; see ${kubeletLog}`);
    if (Date.now() - lastReport > 5000) {
      progress(`waiting for ${waiting.length} pod(s) to be Ready: ${[...why.keys()].join(', ')}`);
      lastReport = Date.now();
    }
    await new Promise((r) => setTimeout(r, 300));
  }
}

export async function stopKubelet(sd: string): Promise<boolean> {
  const file = kubePaths(sd).kubeletPid;
  const stopped = await stopPid(pidIn(file));
  rmSync(file, { force: true });
  return stopped;
}

/**
 * `down`'s API part, once everything local is gone: deletes what `up` created. When the API
 * cannot be reached, or an object will not go, the record of them stays (a later `down` tries
 * again) and the rest of <state-dir>/kube (tokens, kubeconfig copy, log) is removed.
 */
export async function downKube(sd: string): Promise<void> {
  const paths = kubePaths(sd);
  let r: KubeRecord | undefined;
  try {
    r = readKubeRecord(sd);
  } catch (err) {
    progress(`${(err as Error).message}; removing ${paths.dir} without deleting anything through the API`);
  }
  const keepRecord = (why: string): void => {
    progress(`${why}; the objects up created there are left, and listed in ${paths.created} for the next \`nodemesh down\``);
    for (const f of [paths.podsDir, paths.clusterKubeconfig, paths.kubeletLog, paths.kubeletReady]) rmSync(f, { recursive: true, force: true });
  };
  if (r) {
    let api: KubeApi;
    try {
      api = await checkKubeApi(r.kubeconfig);
    } catch (err) {
      return keepRecord((err as Error).message);
    }
    const failed = await deleteCreated(api, sd, progress);
    if (failed.length) return keepRecord(`could not delete ${failed.length} object(s):\n${failed.join('\n')}`);
  }
  rmSync(paths.dir, { recursive: true, force: true });
}
