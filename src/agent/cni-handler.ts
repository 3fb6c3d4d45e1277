// The agent's answer to the nodemesh-cni plugin: DEL always succeeds so the runtime can clean
// up, CHECK verifies, ADD enrolls a pod the mesh captures (metadata from the config dir in
// local mode, from the control plane's published workload otherwise) before its containers start.
import { existsSync } from 'node:fs';
import { CniError } from '../errors.js';
import type { Logger } from '../log.js';
import type { MeshMetrics } from '../telemetry/index.js';
import { podAddressOf, type CniRequest } from './cni-server.js';
import type { ControlPlaneSource } from './cp-source.js';
import { exclusionsFrom, type EnrolledPod, type Enroller } from './enrollment.js';
import type { PodMeta, PodSource } from './podsource.js';
import type { LocalWorkloads } from './workloads.js';

/** What a CNI request needs from the agent. */
export interface CniContext {
  enroller: Enroller;
  workloads: LocalWorkloads;
  cp: ControlPlaneSource | undefined;
  podSource: PodSource | undefined;
  trustDomain: string | undefined;
  workloadWaitMs: number | undefined;
  metrics: MeshMetrics;
  log: Logger;
  remember(uid: string, namespace: string, name: string, ip: string, enrolled: boolean, meta?: PodMeta): void;
  requestCert(trustDomain: string, namespace: string, sa: string): void;
}

/** Pod metadata: from the config dir in local mode; from the published workload otherwise. */
async function podMeta(c: CniContext, uid: string, ns: string, name: string, ip: string, runtimeAnnotations: Record<string, string> | undefined): Promise<PodMeta | undefined> {
  if (c.podSource) {
    const m = c.podSource.lookup(ns, name);
    return m && runtimeAnnotations ? { ...m, annotations: { ...m.annotations, ...runtimeAnnotations } } : m;
  }
  const cp = c.cp!;
  // Tell the control plane the pod runs here with this IP, as the kubelet would, then wait
  // for it to publish the workload: its tunnel protocol says whether the mesh captures it.
  c.workloads.set({ uid, namespace: ns, name, ip, enrolled: false, serviceAccount: 'default', labels: {} });
  await cp.reportPods().catch(() => {});
  const w = await cp.awaitWorkload(ns, name, ip, c.workloadWaitMs ?? 10_000);
  if (!w) {
    c.workloads.deleteUid(uid);
    throw new CniError(`nodemesh agent: the control plane has not published pod ${ns}/${name} (${ip}) within ${(c.workloadWaitMs ?? 10_000) / 1000} s; is it running and does it know this pod?`, { cniCode: 11 });
  }
  return {
    uid,
    namespace: ns,
    name,
    serviceAccount: w.serviceAccount,
    labels: w.canonicalName ? { app: w.canonicalName } : {},
    annotations: runtimeAnnotations ?? {},
    ambient: w.tunnelProtocol === 'HBONE',
  };
}

/** Answers one CNI request: DEL always succeeds, CHECK verifies, ADD enrolls an ambient pod. */
export async function handleCni(c: CniContext, req: CniRequest): Promise<void> {
  const enroller = c.enroller;
  const ns = req.args.K8S_POD_NAMESPACE;
  const name = req.args.K8S_POD_NAME;
  const uid = req.args.K8S_POD_UID;
  if (req.command === 'DEL') {
    // DEL must always succeed so the runtime can clean the pod up.
    // (A pod the pod watch adopted has no sandbox id: an empty one matches nothing.)
    const known = uid ? uid : req.containerId ? enroller.pods().find((p) => p.containerId === req.containerId)?.uid : undefined;
    if (known) await releasePod(c, known);
    c.metrics.enrolledPods.set(enroller.pods().length);
    return;
  }
  if (!ns || !name || !uid) throw new CniError('nodemesh agent: CNI_ARGS must carry K8S_POD_NAMESPACE, K8S_POD_NAME and K8S_POD_UID', { cniCode: 4 });
  if (req.command === 'CHECK') {
    const known = c.workloads.all().find((p) => p.uid === uid);
    if (known?.enrolled && !enroller.get(uid)) throw new CniError(`nodemesh agent: pod ${ns}/${name} should be enrolled but is not`, { cniCode: 100 });
    return;
  }
  if (!req.netns) throw new CniError('nodemesh agent: CNI_NETNS is empty', { cniCode: 4 });
  if (!existsSync(req.netns)) throw new CniError(`nodemesh agent: network namespace ${req.netns} does not exist`, { cniCode: 4 });
  const addr = podAddressOf(req.config);
  if (!addr) throw new CniError(`nodemesh agent: no IPv4 address in prevResult for ${ns}/${name}; nodemesh-cni must be chained after an IPAM-assigning plugin`, { cniCode: 7 });
  const rc = req.config.runtimeConfig as Record<string, unknown> | undefined;
  const annotations = rc?.['io.kubernetes.cri.pod-annotations'] as Record<string, string> | undefined;
  const meta = await podMeta(c, uid, ns, name, addr.ip, annotations);
  if (!meta?.ambient) {
    c.remember(uid, ns, name, addr.ip, false, meta);
    c.log.info({ pod: `${ns}/${name}`, ip: addr.ip }, meta ? 'pod not enrolled: no nodemesh.io/dataplane-mode=ambient label on it or its namespace' : 'pod not enrolled: unknown to the pod source');
    return;
  }
  let exclusions;
  try {
    exclusions = exclusionsFrom(meta.annotations);
  } catch (e) {
    throw new CniError(`nodemesh agent: ${(e as Error).message}`, { cniCode: 7 });
  }
  await enrollPod(c, { ip: addr.ip, netnsPath: req.netns, containerId: req.containerId, exclusions }, meta);
}

/**
 * Enrolls an ambient pod whose netns is known: the one way in, for a CNI ADD and for the pod
 * watch adopting a running pod. A second call for the same pod and netns (the watch and an ADD
 * at once) finds it enrolled and changes nothing (Enroller.enroll).
 */
export async function enrollPod(c: CniContext, p: { ip: string; netnsPath: string; containerId: string; exclusions: EnrolledPod['exclusions'] }, meta: PodMeta): Promise<void> {
  await c.enroller.enroll({
    uid: meta.uid,
    namespace: meta.namespace,
    name: meta.name,
    ip: p.ip,
    netnsPath: p.netnsPath,
    containerId: p.containerId,
    serviceAccount: meta.serviceAccount,
    labels: meta.labels,
    trustDomain: c.trustDomain ?? 'cluster.local',
    exclusions: p.exclusions,
  });
  c.remember(meta.uid, meta.namespace, meta.name, p.ip, true, meta);
  c.metrics.enrolledPods.set(c.enroller.pods().length);
  c.requestCert(c.trustDomain ?? 'cluster.local', meta.namespace, meta.serviceAccount);
}

/** A pod that leaves the mesh but keeps running (it opted out). */
export interface StillRunning {
  namespace: string;
  name: string;
  ip: string;
  meta: PodMeta;
}

/**
 * Takes a pod out of the mesh: a CNI DEL (the pod is gone), or the pod watch seeing it opt out
 * (`stillRuns`: it stays known, unenrolled) or deleted from the API. A detach that fails is logged.
 */
export async function releasePod(c: CniContext, uid: string, stillRuns?: StillRunning): Promise<void> {
  await c.enroller.unenroll(uid).catch((err: unknown) => c.log.error({ err, uid }, 'detaching the pod failed'));
  if (stillRuns) c.remember(uid, stillRuns.namespace, stillRuns.name, stillRuns.ip, false, stillRuns.meta);
  else c.workloads.deleteUid(uid);
  c.metrics.enrolledPods.set(c.enroller.pods().length);
  void c.cp?.reportPods().catch(() => {});
}

/** What the pod watch (kube-pods.ts) asks of enrollment: the CNI path below, or a fake in unit tests. */
export interface PodEnrollment {
  /** The pods enrolled on this node now, served or pending. */
  enrolled(): readonly { uid: string; namespace: string; name: string; ip: string; enrolledAt: string }[];
  enroll(p: { ip: string; netnsPath: string; exclusions: EnrolledPod['exclusions'] }, meta: PodMeta): Promise<void>;
  /** Takes a pod out of the mesh; `stillRuns` when it only opted out. */
  release(uid: string, stillRuns?: StillRunning): Promise<void>;
}

/** The agent's own enrollment (the CNI path) as the watch's: what a CNI ADD would do, and a DEL. */
export function cniEnrollment(ctx: () => CniContext): PodEnrollment {
  return {
    enrolled: () => [...ctx().enroller.pods(), ...ctx().enroller.pendingPods()],
    async enroll(p, meta) {
      // No sandbox id: the runtime never told this agent (cni-handler's DEL matches none).
      await enrollPod(ctx(), { ...p, containerId: '' }, meta);
      void ctx().cp?.reportPods().catch(() => {});
    },
    release: (uid, stillRuns) => releasePod(ctx(), uid, stillRuns),
  };
}
