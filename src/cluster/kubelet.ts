// The simulator as the kubelet of its nodes (`nodemesh up --kubeconfig` runs it in the
// background as `nodemesh sim kubelet`): one Pod watch per node (fieldSelector spec.nodeName),
// and a reconcile loop that runs the Pods bound to those nodes and removes the ones deleted
// (sim/kubelet.ts), hands each its ServiceAccount tokens (kube-tokens.ts) and writes their
// status back through the status subresource (kubelet-status.ts). While the API is away what
// runs keeps running and nothing is removed; status writes wait for it. In multi-node mode it
// also holds the relay that offers the API on the cluster network (kube-relay.ts).
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { isNodemeshError } from '../errors.js';
import type { Logger } from '../log.js';
import { KindInformer, KubeApi, loadKubeConfig, statusOf, type KubeKind, type Raw } from '../kube/index.js';
import { removeApiPod, runApiPod, simPodsByUid, type SimPodInfo } from '../sim/index.js';
import { CLUSTER_NETNS_PATH } from './nodes.js';
import { ApiRelay, CLUSTER_KUBE_API, serverTarget } from './kube-relay.js';
import { kubePaths, podFilesDir, readKubeRecord, type KubeRecord } from './kube-record.js';
import { SERVICEACCOUNT_DIR_ENV, serviceAccountDir, TokenKeeper } from './kube-tokens.js';
import { podStatus, statusSignature, type PodOutcome } from './kubelet-status.js';

const POD_KIND: KubeKind = { group: '', version: 'v1', kind: 'Pod', plural: 'pods' };
const rec = (v: unknown): Raw => (v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as Raw) : {});
const uidOf = (raw: Raw): string => String(rec(raw.metadata).uid ?? '');
const nameOf = (raw: Raw): string => `${String(rec(raw.metadata).namespace)}/${String(rec(raw.metadata).name)}`;

/** A pod that could not be run, and when to try again. */
interface Failure {
  attempts: number;
  retryAt: number;
  /** A pod the simulator can never run as it is (bad spec): tried again only once it changes. */
  permanentAt?: string;
  reason: string;
  message: string;
}

export interface KubeletOptions {
  sd: string;
  log: Logger;
  /** How often everything is looked at again without an event (default 2000 ms). */
  tickMs?: number;
}

export class Kubelet {
  readonly #sd: string;
  readonly #log: Logger;
  readonly #rec: KubeRecord;
  readonly #api: KubeApi;
  readonly #tokens: TokenKeeper;
  readonly #informers = new Map<string, KindInformer>();
  /** By node, then uid: the informers' view. */
  readonly #pods = new Map<string, Map<string, Raw>>();
  readonly #failures = new Map<string, Failure>();
  readonly #statusFailing = new Set<string>();
  readonly #tokenFailing = new Set<string>();
  #relay: ApiRelay | undefined;
  #tick: NodeJS.Timeout | undefined;
  #busy: Promise<void> | undefined;
  #again = false;
  #stopped = false;
  #ready = false;

  private constructor(o: KubeletOptions, rec_: KubeRecord) {
    this.#sd = o.sd;
    this.#log = o.log.child({ component: 'kubelet' });
    this.#rec = rec_;
    const kc = loadKubeConfig({ kubeconfig: rec_.kubeconfig });
    this.#api = new KubeApi(kc);
    const c = kc.getCurrentCluster();
    const caPem = c?.caData ? Buffer.from(c.caData, 'base64').toString('utf8') : c?.caFile ? readFileSync(c.caFile, 'utf8') : undefined;
    this.#tokens = new TokenKeeper(this.#api, caPem);
  }

  /** Starts the relay (multi-node mode) and the watches; the first reconcile follows the first lists. */
  static async start(o: KubeletOptions): Promise<Kubelet> {
    const r = readKubeRecord(o.sd);
    if (!r) throw new Error(`no embedded cluster record in ${kubePaths(o.sd).record}; \`nodemesh up --kubeconfig\` writes it`);
    const k = new Kubelet(o, r);
    rmSync(kubePaths(o.sd).kubeletReady, { force: true });
    if (r.relay) k.#relay = await ApiRelay.start(CLUSTER_NETNS_PATH, CLUSTER_KUBE_API, serverTarget(r.server), o.log);
    for (const n of r.nodes) {
      const inf = new KindInformer(k.#api, POD_KIND, k.#log.child({ node: n.name }), { fieldSelector: `spec.nodeName=${n.name}`, account: "the kubeconfig's user", backoffMs: 500, maxBackoffMs: 5000 });
      const pods = new Map<string, Raw>();
      k.#pods.set(n.name, pods);
      inf.on('listed', (items) => {
        pods.clear();
        for (const p of items) pods.set(uidOf(p), p);
        k.#kick();
      });
      inf.on('upsert', (p) => {
        pods.set(uidOf(p), p);
        k.#kick();
      });
      inf.on('remove', (p) => {
        pods.delete(uidOf(p));
        k.#kick();
      });
      k.#informers.set(n.name, inf);
      inf.start();
    }
    k.#tick = setInterval(() => k.#kick(), o.tickMs ?? 2000);
    k.#log.info({ server: r.server, nodes: r.nodes.map((n) => n.name), relay: r.relay?.listen }, 'kubelet of the simulated nodes started');
    return k;
  }

  /** Stops watching and relaying; the pods keep running (as when a kubelet restarts). */
  async stop(): Promise<void> {
    this.#stopped = true;
    clearInterval(this.#tick);
    for (const i of this.#informers.values()) i.stop();
    await this.#busy;
    await this.#relay?.close();
    rmSync(kubePaths(this.#sd).kubeletReady, { force: true });
  }

  #kick(): void {
    if (this.#stopped) return;
    if (this.#busy) {
      this.#again = true;
      return;
    }
    this.#busy = (async () => {
      do {
        this.#again = false;
        try {
          await this.#reconcile();
        } catch (err) {
          this.#log.error({ err }, 'reconcile failed; trying again');
        }
      } while (this.#again && !this.#stopped);
    })().finally(() => (this.#busy = undefined));
  }

  /** Every pod bound to one of the nodes, unless it is being deleted; once every node's pods were listed. */
  #desired(): Map<string, Raw> | undefined {
    if (![...this.#informers.values()].every((i) => i.synced)) return undefined;
    const out = new Map<string, Raw>();
    for (const pods of this.#pods.values()) for (const [uid, p] of pods) if (!rec(p.metadata).deletionTimestamp) out.set(uid, p);
    return out;
  }

  async #reconcile(): Promise<void> {
    const desired = this.#desired();
    if (!desired || this.#stopped) return;
    const running = simPodsByUid(this.#sd);
    for (const [uid, p] of running) if (!desired.has(uid)) await this.#remove(uid, p);
    for (const [uid, raw] of desired) {
      if (this.#stopped) return;
      await this.#handle(uid, raw, running.get(uid));
    }
    if (!this.#ready && !this.#stopped) {
      this.#ready = true;
      writeFileSync(kubePaths(this.#sd).kubeletReady, `${process.pid}\n`);
      this.#log.info({ pods: desired.size }, 'kubelet synced: every pod bound to its nodes is handled');
    }
  }

  async #remove(uid: string, p: SimPodInfo): Promise<void> {
    this.#log.info({ pod: `${p.namespace}/${p.name}`, uid }, 'pod deleted from the API (or bound elsewhere): removing it');
    const warnings = await removeApiPod(uid, { stateDir: this.#sd });
    for (const w of warnings) this.#log.warn({ pod: `${p.namespace}/${p.name}` }, w);
    this.#tokens.forget(uid);
    this.#failures.delete(uid);
    this.#tokenFailing.delete(uid);
    this.#statusFailing.delete(uid);
    rmSync(podFilesDir(this.#sd, uid), { recursive: true, force: true });
    // A server with graceful deletion waits for the kubelet: the pod is gone here, so it may go.
    const deleting = [...this.#pods.values()].map((m) => m.get(uid)).find((r) => r && rec(r.metadata).deletionTimestamp);
    if (deleting) {
      const path = `/api/v1/namespaces/${encodeURIComponent(p.namespace)}/pods/${encodeURIComponent(p.name)}`;
      await this.#api.request('DELETE', path, { apiVersion: 'v1', kind: 'DeleteOptions', gracePeriodSeconds: 0, preconditions: { uid } }, 'application/json', 10_000).catch(() => undefined);
    }
  }

  async #handle(uid: string, raw: Raw, sim: SimPodInfo | undefined): Promise<void> {
    const spec = rec(raw.spec);
    const node = this.#rec.nodes.find((n) => n.name === spec.nodeName);
    const podDir = podFilesDir(this.#sd, uid);
    const f = this.#failures.get(uid);
    const rv = String(rec(raw.metadata).resourceVersion ?? '');
    if (f && (f.permanentAt ? f.permanentAt === rv : f.retryAt > Date.now())) return;
    const agent = this.#rec.agents.some((a) => a.uid === uid);
    try {
      await this.#tokens.ensure(raw, podDir);
      if (this.#tokenFailing.delete(uid)) this.#log.info({ pod: nameOf(raw) }, 'ServiceAccount token renewed');
    } catch (err) {
      // A pod not started yet waits for its token; one that runs keeps the token it has (renewed
      // at 80% of its lifetime, so it is still valid) and is tried again on the next pass.
      if (!sim && !agent) return this.#failed(uid, raw, node?.ip ?? null, 'ServiceAccountTokenFailed', err);
      if (!this.#tokenFailing.has(uid)) this.#log.warn({ pod: nameOf(raw), err: (err as Error).message }, 'cannot renew the pod\'s ServiceAccount token yet; it keeps the one it has');
      this.#tokenFailing.add(uid);
    }
    if (spec.hostNetwork === true) {
      // The agents' pods run as the agents `up` started; the simulator runs no others.
      if (agent) return;
      return this.#writeStatus(raw, { kind: 'failed', reason: 'HostNetworkUnsupported', message: 'the simulator runs pods in network namespaces of their own, not hostNetwork pods' }, node?.ip ?? null);
    }
    const always = (spec.restartPolicy ?? 'Always') === 'Always';
    let pod = sim;
    if (!pod || pod.status === 'Creating' || (pod.status === 'Exited' && always)) {
      this.#log.info({ pod: nameOf(raw), uid, node: spec.nodeName }, pod ? 'restarting the pod\'s containers' : 'running the pod');
      try {
        const env = spec.automountServiceAccountToken === false ? undefined : { [SERVICEACCOUNT_DIR_ENV]: serviceAccountDir(podDir) };
        pod = await runApiPod(raw, {
          stateDir: this.#sd,
          configDir: this.#rec.configDir,
          ...(this.#rec.mode === 'host' ? { hostNode: this.#rec.nodes[0]!.name } : {}),
          ...(env ? { env } : {}),
          onProgress: (line) => this.#log.debug({ pod: nameOf(raw) }, line),
        });
      } catch (err) {
        return this.#failed(uid, raw, node?.ip ?? null, 'SimulatorError', err);
      }
      this.#failures.delete(uid);
      this.#log.info({ pod: nameOf(raw), ip: pod.ip }, 'pod running and ready');
    }
    await this.#writeStatus(raw, { kind: pod.status === 'Exited' ? 'exited' : 'running', pod }, node?.ip ?? null);
  }

  async #failed(uid: string, raw: Raw, nodeIp: string | null, reason: string, err: unknown): Promise<void> {
    const prev = this.#failures.get(uid);
    const attempts = (prev?.attempts ?? 0) + 1;
    const message = (err as Error).message;
    // A spec the simulator cannot run is tried again only when the pod changes.
    const permanent = isNodemeshError(err, 'NM_ERR_CONFIG_INVALID') || isNodemeshError(err, 'NM_ERR_CONFIG_CONFLICT');
    const f: Failure = { attempts, retryAt: Date.now() + Math.min(30_000, 1000 * 2 ** (attempts - 1)), reason, message };
    if (permanent) f.permanentAt = String(rec(raw.metadata).resourceVersion ?? '');
    this.#failures.set(uid, f);
    if (prev?.message !== message) this.#log.error({ pod: nameOf(raw), reason, attempts, retryInMs: permanent ? undefined : f.retryAt - Date.now() }, message);
    await this.#writeStatus(raw, { kind: 'failed', reason, message }, nodeIp);
  }

  async #writeStatus(raw: Raw, outcome: PodOutcome, nodeIp: string | null): Promise<void> {
    const status = podStatus(raw, outcome, nodeIp);
    if (statusSignature(status) === statusSignature(raw.status)) return;
    const m = rec(raw.metadata);
    const path = `/api/v1/namespaces/${encodeURIComponent(String(m.namespace))}/pods/${encodeURIComponent(String(m.name))}/status`;
    try {
      await this.#api.request('PATCH', path, { metadata: { uid: m.uid }, status }, 'application/merge-patch+json', 10_000);
      if (this.#statusFailing.delete(uidOf(raw))) this.#log.info({ pod: nameOf(raw) }, 'pod status written again');
    } catch (err) {
      // Logged once per pod while the API refuses or is away; the next pass writes it.
      if (!this.#statusFailing.has(uidOf(raw))) this.#log.warn({ pod: nameOf(raw), status: statusOf(err), err: (err as Error).message }, 'cannot write the pod status; trying again');
      this.#statusFailing.add(uidOf(raw));
    }
  }
}
