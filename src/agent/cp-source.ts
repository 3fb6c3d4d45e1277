// The agent's view of the mesh when a control plane drives it: xDS state (workloads,
// services, policies), pod status reports (how the control plane learns pod IPs, the way
// the kubelet reports pod status), and workload certificates from the control plane's CA;
// the last good state of both kept on disk, and authorization that fails closed.
import { join } from 'node:path';
import { isNodemeshError } from '../errors.js';
import type { Logger } from '../log.js';
import { CaClient, SecretManager, SecretStore } from '../identity/index.js';
import type { LbPolicy } from '../proxy/index.js';
import type { StateChange, Workload } from '../state/index.js';
import { PodStatusClient, XdsClient, type ControlPlaneConnection, type PodStatus } from '../xds/index.js';
import { MeshView } from './mesh-view.js';
import { encodeSnapshot, readSnapshot, SnapshotWriter } from './persist.js';

export { peerOfWorkload, serviceForHost, workloadPortProtocol } from './mesh-view.js';

/** How long policy re-evaluation of open connections waits for named policies to arrive. */
const POLICY_SETTLE_MS = 2000;

/** What the agent restored from its state directory at start. */
export interface Restored {
  /** Resources of the xDS snapshot now in the state (0: none, or it was unusable). */
  resources: number;
  /** Identities whose certificate was restored. */
  certificates: string[];
}

export class ControlPlaneSource extends MeshView {
  readonly xds: XdsClient;
  readonly secrets: SecretManager;
  readonly #status: PodStatusClient;
  readonly #log: Logger;
  #reporting: Promise<unknown> = Promise.resolve();
  #timer: NodeJS.Timeout | undefined;
  #pods: () => PodStatus[] | undefined = () => undefined;
  readonly #node: string;
  readonly #snapshotPath: string | undefined;
  readonly #writer: SnapshotWriter | undefined;
  #restored = false;

  /** With `stateDir` (the agent's directory), the last good xDS state and certificates persist there. */
  constructor(conn: ControlPlaneConnection, log: Logger, lb: LbPolicy = 'round-robin', stateDir?: string, cursors?: Uint32Array) {
    super(lb, log.child({ component: 'cp-source' }), cursors);
    this.#log = log.child({ component: 'cp-source' });
    this.#node = conn.nodeName;
    this.xds = new XdsClient({ ...conn, state: this.state, logger: log });
    this.#status = new PodStatusClient(conn);
    const store = stateDir ? new SecretStore(join(stateDir, 'secrets')) : undefined;
    this.secrets = new SecretManager({ ca: new CaClient(conn), rootsPem: String(conn.rootCertPem), logger: log, ...(store ? { store } : {}) });
    if (stateDir) {
      const path = join(stateDir, 'xds-snapshot.json');
      this.#snapshotPath = path;
      this.#writer = new SnapshotWriter({ path, take: () => encodeSnapshot(this.xds.snapshot(), this.#node), log: this.#log });
    }
  }

  /** Serving policy: synced with the control plane, or restored from the last good snapshot. */
  override get serving(): boolean {
    return this.xds.isReady || this.#restored;
  }

  override set serving(_v: boolean) {
    throw new Error('a control-plane source serves once synced or restored; it is not told');
  }

  /**
   * Loads the last good xDS snapshot and the workload certificates from the state dir. Call
   * before start() and before any listener opens. A file that cannot be used is logged with
   * its path and skipped: the agent then starts as if it had none (fail closed: connections
   * to its pods are denied until xDS arrives), and never crashes.
   */
  restore(): Restored {
    let certificates: string[] = [];
    try {
      certificates = this.secrets.restore();
    } catch (err) {
      this.#log.error({ err }, 'stored certificates not used; requesting new ones from the CA');
    }
    let resources = 0;
    if (this.#snapshotPath) {
      try {
        const snap = readSnapshot(this.#snapshotPath, this.#node);
        if (snap) {
          const r = this.xds.restore(snap);
          resources = r.resources;
          this.#restored = resources > 0;
          if (r.rejected.length) this.#log.warn({ file: this.#snapshotPath, rejected: r.rejected }, 'xDS snapshot: some resources were rejected on restore');
        }
      } catch (err) {
        // A bad file is NM_ERR_STATE_FILE; anything else is a bug, and still must not stop the agent.
        this.#log.error({ err, ...(isNodemeshError(err, 'NM_ERR_STATE_FILE') ? {} : { file: this.#snapshotPath }) }, 'xDS snapshot not used; denying connections to this node\'s pods until the control plane syncs');
      }
    }
    if (resources || certificates.length) this.#log.info({ resources, certificates: certificates.length, file: this.#snapshotPath }, 'restored the last good state from disk');
    return { resources, certificates };
  }

  /**
   * Starts xDS; `pods` lists this node's pods for every status report, or returns undefined
   * while the agent does not know them yet (before it has adopted the pods a previous agent
   * enrolled): a report then would tell the control plane the node has no pods, and it would
   * withdraw them from every other node.
   */
  start(pods: () => PodStatus[] | undefined): void {
    this.#pods = pods;
    // Every applied response (ACKed, or NACKed with the rest applied) is saved, debounced.
    if (this.#writer) this.xds.on('applied', () => this.#writer!.schedule());
    this.xds.start();
    // Re-report periodically and on every reconnect, so a restarted control plane relearns
    // this node's pods without waiting for a pod to change.
    this.xds.on('connected', () => void this.reportPods());
    this.#timer = setInterval(() => void this.reportPods(), 30_000);
    this.#timer.unref();
  }

  /** Sends this node's full pod list; reports are serialized, the newest list wins. */
  reportPods(): Promise<void> {
    const next = this.#reporting.then(async () => {
      const pods = this.#pods();
      if (!pods) return;
      try {
        await this.#status.report(pods);
      } catch (err) {
        this.#log.warn({ err }, 'pod status report failed; will retry');
        throw err;
      }
    });
    this.#reporting = next.catch(() => {});
    return next;
  }

  /** Waits until the control plane publishes a workload for this pod at this IP. */
  awaitWorkload(namespace: string, name: string, ip: string, timeoutMs: number): Promise<Workload | undefined> {
    const find = (): Workload | undefined => {
      const w = this.state.workloadByIp(ip);
      return w && w.namespace === namespace && w.name === name ? w : undefined;
    };
    const now = find();
    if (now) return Promise.resolve(now);
    return new Promise((resolve) => {
      const onChange = (): void => {
        const w = find();
        if (w) done(w);
      };
      const timer = setTimeout(() => done(undefined), timeoutMs);
      const done = (w: Workload | undefined): void => {
        clearTimeout(timer);
        this.state.off('change', onChange);
        resolve(w);
      };
      this.state.on('change', onChange);
    });
  }

  /**
   * Calls `fn` after each state change that may change a verdict (policies, workload
   * updates, rejections), so open connections are re-authorized. While a workload names a policy that
   * has not arrived (the control plane sends a workload's new policy list just before the
   * policy), the call waits for it, up to POLICY_SETTLE_MS, instead of resetting every
   * connection to that workload for the moment in between.
   */
  onPolicyChange(fn: () => void): void {
    let timer: NodeJS.Timeout | undefined;
    const fire = (): void => {
      clearTimeout(timer);
      timer = undefined;
      fn();
    };
    this.state.on('change', (c: StateChange) => {
      // A workload that left the state is not a reason to reset its connections (a deleted
      // pod ends them itself; a control plane that lost track must not cut the node off).
      if (c.policies.upserted.length + c.policies.removed.length + c.workloads.upserted.length + c.rejected.upserted.length + c.rejected.removed.length === 0) return;
      const settled = [...this.state.workloads()].every((w) => w.authorizationPolicies.every((k) => this.state.policy(k) !== undefined));
      if (settled) return fire();
      timer ??= setTimeout(fire, POLICY_SETTLE_MS);
      timer.unref();
    });
  }

  async stop(): Promise<void> {
    if (this.#timer) clearInterval(this.#timer);
    // The last word on disk is the state we stop with.
    this.#writer?.flush();
    await this.xds.stop();
    this.#status.close();
    this.secrets.close();
  }
}
