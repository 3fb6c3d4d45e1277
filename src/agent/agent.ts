// The node agent: loads the redirection programs, serves the CNI relay, enrolls pods, runs
// the shared proxy and the admin, metrics and readiness endpoints; takes a node over from an
// agent running beside it (an upgrade) and drains when it stops.
import { mkdirSync } from 'node:fs';
import { hostname } from 'node:os';
import { NativeError, UsageError } from '../errors.js';
import type { Logger } from '../log.js';
import { NetnsConnector, newCursors, NodeProxy, type LbPolicy } from '../proxy/index.js';
import { Redirector, findCgroup2Root, listenInNetns, socketsInNetns, type KernelSplice } from '../redirect/index.js';
import { FlowLog, MeshMetrics, type AccessLogMode } from '../telemetry/index.js';
import { serveAgentEndpoints, type Endpoint, type HttpEndpoints } from './admin.js';
import { AgentCapture, captureOff, captureOffRoute, observePods } from './capture.js';
import { pruneIdentities, readOrigDst } from './bounded.js';
import { NodeHandoff } from './handoff.js';
import { cniEnrollment, handleCni, type CniContext } from './cni-handler.js';
import { Enroller } from './enrollment.js';
import { agentPaths, DEFAULT_PIN_ROOT, PORTS, type AgentPaths } from '../net/index.js';
import type { PodMeta, PodSource } from './podsource.js';
import { LocalWorkloads } from './workloads.js';
import { ControlPlaneSource } from './cp-source.js';
import { requestTelemetry, type AgentRequestTelemetry } from './request-telemetry.js';
import { ProxyGroup } from './proxy-workers.js';
import { PodWatch, type PodWatchConnection } from './kube-pods.js';
import type { ControlPlaneConnection } from '../xds/index.js';

export interface AgentOptions {
  stateDir: string;
  pinRoot?: string;
  /** The pods' cgroup parent to observe for capture; 'none' for none; default: detected. */
  observeCgroup?: string;
  /** Node-level capture (default on). Off: no observers, no records kept for it, /debug/capture refuses. */
  capture?: boolean;
  /** Per-request access log of HTTP ports on stdout (default off). */
  accessLog?: AccessLogMode;
  nodeName?: string;
  trustDomain?: string;
  /** Local mode: pod metadata from a config directory, no policy. */
  podSource?: PodSource;
  /** Control-plane mode: workloads, policy and certificates over xDS and the CA. */
  controlPlane?: ControlPlaneConnection;
  /** Control-plane mode: also watch this node's Pods in the Kubernetes API, to adopt and reconcile them. */
  kubernetes?: PodWatchConnection;
  /** How a Service VIP picks an endpoint (default round-robin). */
  lb?: LbPolicy;
  /** The same-node kernel splice (default true; src/proxy/splice.ts). */
  splice?: boolean;
  /**
   * Proxies to run, the main thread's included (default 1): N-1 worker threads each serve a
   * share of every pod's connections (proxy-workers.ts, docs/architecture.md "Proxy workers").
   */
  workers?: number;
  /** Close open connections that a policy change denies (default true). */
  closeDeniedConnections?: boolean;
  /** How long a CNI ADD waits for the control plane to publish the new pod (default 10 s). */
  workloadWaitMs?: number;
  admin?: Endpoint;
  metrics?: Endpoint;
  ready?: Endpoint;
  connectTimeoutMs?: number;
  /** Relayed connections idle this long are closed (default 1 h); 0 disables. */
  idleTimeoutMs?: number;
  log: Logger;
  /** Runs after the CNI socket is up, e.g. to chain our plugin into the node's conflist. */
  onCniReady?: (socketPath: string) => void | Promise<void>;
  /** On stop, open connections keep running this long before they are closed (default 30 s, as ztunnel's). */
  drainMs?: number;
}

export class Agent {
  readonly paths: AgentPaths;
  readonly node: string;
  readonly metrics = new MeshMetrics();
  readonly flows: FlowLog;
  readonly #requests: AgentRequestTelemetry;
  readonly workloads: LocalWorkloads;
  readonly #o: AgentOptions;
  readonly #log: Logger;
  #redirect?: Redirector;
  #proxy?: NodeProxy;
  #group?: ProxyGroup;
  #enroller?: Enroller;
  #http?: HttpEndpoints;
  #cp?: ControlPlaneSource;
  #capture?: AgentCapture;
  #kube?: PodWatch;
  #ready = false;
  readonly #node: NodeHandoff;
  #stopping?: Promise<void>;
  /** Aborted by stop() (start gives up waiting) and again by endDrain() (the drain ends now). */
  readonly #stopSignal = new AbortController();
  readonly #endDrain = new AbortController();
  /** Pods of a previous agent adopted: only from then on does a pod status report tell the truth. */
  #adopted = false;
  readonly #startedAt = new Date().toISOString();
  /** Round-robin cursors every proxy (main thread and workers) shares. */
  readonly #lbCursors = newCursors();

  constructor(o: AgentOptions) {
    this.#o = o;
    this.paths = agentPaths(o.stateDir);
    this.node = o.nodeName ?? hostname();
    this.#log = o.log.child({ component: 'agent', node: this.node });
    this.#node = new NodeHandoff({ cniSocket: this.paths.cniSocket, pidFile: this.paths.pidFile, log: o.log, node: this.node, onCni: (req) => handleCni(this.#cniContext(), req) });
    this.flows = new FlowLog(o.log);
    this.#requests = requestTelemetry(this.metrics, o.accessLog, () => this.#capture?.recorder);
    this.workloads = new LocalWorkloads(o.trustDomain);
  }

  get ready(): boolean {
    return this.notReadyReasons().length === 0;
  }

  /** Why the agent is not ready (empty when it is): each thing it cannot do yet, said plainly. */
  notReadyReasons(): string[] {
    const out: string[] = [];
    if (this.#stopping) out.push('draining: the agent is stopping');
    else if (!this.#ready) out.push('starting');
    // Synced with the control plane, or serving the last good state restored from disk.
    if (this.#cp && !this.#cp.serving) out.push('waiting for the first xDS sync (no saved state to serve)');
    for (const e of this.#http?.unbound() ?? []) out.push(`${e.name} endpoint ${e.address} not bound (${e.error ?? 'not tried yet'}); retrying`);
    for (const p of this.#enroller?.pending() ?? []) out.push(`pod ${p.pod} enrolled but not served, its connections are refused (${p.error}); retry ${p.attempts} at ${p.nextRetryAt}`);
    return out;
  }

  async start(): Promise<void> {
    if (typeof process.getuid === 'function' && process.getuid() !== 0) {
      throw new NativeError('NM_ERR_NOT_ROOT', 'the node agent loads eBPF programs and enters pod namespaces: run it as root');
    }
    if (!this.#o.podSource === !this.#o.controlPlane) {
      throw new UsageError('the agent needs exactly one source: a config directory (local mode) or a control plane');
    }
    // The Kubernetes pod watch (kube-pods.ts), control-plane mode only: a bad kubeconfig fails now; it starts once ready.
    if (this.#o.kubernetes && !this.#o.controlPlane) throw new UsageError('the Kubernetes pod watch needs the control-plane mode (--control-plane)');
    this.#kube = this.#o.kubernetes && PodWatch.connect(this.#o.kubernetes, { node: this.node, log: this.#o.log, enrollment: cniEnrollment(() => this.#cniContext()), active: () => !this.#stopping && this.#node.claim.holder() === process.pid });
    mkdirSync(this.paths.dir, { recursive: true });
    if (this.#o.capture !== false) this.#capture = new AgentCapture({ node: this.node, tokenFile: this.paths.adminToken, registry: this.metrics.registry, flows: this.flows, workloads: () => this.#cp ?? this.workloads, log: this.#o.log });
    if (this.#o.controlPlane) {
      this.#cp = new ControlPlaneSource(this.#o.controlPlane, this.#o.log, this.#o.lb ?? 'round-robin', this.paths.dir, this.#lbCursors);
      // ---- last good state (docs/security.md "Fail closed") ----
      // The xDS snapshot and workload certificates a previous run saved, loaded before the
      // first xDS request (it resumes from their versions) and before any listener opens.
      this.#cp.restore();
      // ---- end of last good state ----
      this.#cp.start(() => (this.#reportsPods ? this.workloads.all().map((p) => ({ uid: p.uid, namespace: p.namespace, name: p.name, ip: p.ip, phase: 'Running' as const })) : undefined));
      this.#cp.xds.once('ready', () => this.#log.info('first xDS sync complete'));
      // Open connections that a policy change now denies are closed, not left running.
      // (Policies, a workload's policy bindings, or a rejection changed; see onPolicyChange.)
      this.#cp.onPolicyChange(() => {
        if (this.#o.closeDeniedConnections === false) return;
        const n = this.#group?.reevaluate() ?? 0;
        if (n) this.#log.info({ closed: n }, 'closed connections denied by the new policy');
      });
    }
    const cp = this.#cp;
    const cgroupRoot = findCgroup2Root();
    const redirect = await Redirector.open({ pinRoot: this.#o.pinRoot ?? DEFAULT_PIN_ROOT });
    this.#redirect = redirect;
    if (this.#capture) {
      this.#capture.attachKernel(redirect);
      await observePods(redirect, cgroupRoot, this.#o.observeCgroup, this.#log);
    } else await captureOff(redirect, this.#log);
    this.metrics.origDstFrom(() => readOrigDst(this.#redirect, this.#enroller, this.#log));
    const proxy = new NodeProxy({
      listen: (ns, opts) => listenInNetns(ns, opts),
      upstream: new NetnsConnector((ns, n, o) => socketsInNetns(ns, n, o)),
      originalDst: redirect,
      workloads: cp ?? this.workloads,
      ...(cp ? { authorize: (i) => cp.authorize(i) } : {}),
      telemetry: { metrics: this.metrics, flows: this.flows, log: this.#o.log },
      onInboundListener: (pod, fd, kind) => {
        this.#capture?.learnNetns(`${pod.namespace}/${pod.name}`, fd, pod.ip);
        redirect.registerInboundListener(pod.ip, kind, fd);
      },
      ...(cp ? { router: cp } : {}),
      // HTTP ports are known from the control plane's Services: L7 needs one.
      ...(cp ? { http: { ...cp.httpOptions(), telemetry: this.#requests } } : {}),
      // With a control plane every enrolled pod has a certificate: traffic between nodes goes
      // over HBONE (mTLS on 15008). Local mode has no CA, so it stays plain TCP.
      ...(cp ? { hbone: { credentials: cp.secrets, trustDomain: this.#o.trustDomain ?? 'cluster.local' } } : {}),
      ...(this.#o.connectTimeoutMs ? { connectTimeoutMs: this.#o.connectTimeoutMs } : {}),
      ...(this.#o.idleTimeoutMs !== undefined ? { idleTimeoutMs: this.#o.idleTimeoutMs } : {}),
      ...(this.#capture ? { tap: this.#capture.tap } : {}),
      ...this.#splicer(redirect),
    });
    this.#proxy = proxy;
    const group = this.#startWorkers(proxy, redirect);
    this.#group = group;
    cp?.xds.once('ready', () => group.servingChanged());
    this.#enroller = new Enroller({ redirect, proxy: group, podsDir: this.paths.podsDir, cgroupRoot, log: this.#o.log, onRecovered: (p) => this.#served(p), onUnenrolled: () => this.#prune() });

    // The endpoints first, so that whatever the agent waits for below shows in its readiness
    // and /config_dump.
    await this.#serveHttp();
    // Only with policy to serve does this agent open listeners: beside a live agent (an
    // upgrade) they share the pods' connections the moment they open, and an agent without
    // state would refuse its share.
    if (!(await this.#waitForState())) return;
    const previous = this.#node.claim.holder();
    await this.#node.take();
    await this.#o.onCniReady?.(this.paths.cniSocket);
    if (previous !== undefined && previous !== process.pid) this.#log.info({ previousAgent: previous }, 'taking this node over from the agent running beside this one (an upgrade): it drains when it is stopped');
    await this.#adopt();
    if (this.#stopSignal.signal.aborted) return;
    this.#ready = true;
    const enroller = this.#enroller;
    this.#node.watch({ enroller, proxy: group, redirect, draining: () => this.#stopping !== undefined, adopt: () => this.#adopt(),
      onForgotten: (uids) => {
        for (const uid of uids) this.workloads.deleteUid(uid);
        this.metrics.enrolledPods.set(enroller.pods().length);
        this.#prune();
      },
    });
    if (cp) void cp.reportPods().catch(() => {});
    this.#kube?.start();
    this.#log.info({ cniSocket: this.paths.cniSocket, pods: this.#enroller.pods().length, pending: this.#enroller.pending().length }, 'agent ready');
  }

  /** The proxy workers beside the main thread's proxy (none unless `workers` > 1). */
  #startWorkers(main: NodeProxy, redirect: Redirector): ProxyGroup {
    const cp = this.#cp;
    const count = this.#o.workers ?? 1;
    const maps = redirect.workerMaps();
    if (this.#o.splice === false || !('splice' in this.#splicer(redirect, false))) delete maps.splice;
    const group = new ProxyGroup({
      main,
      count,
      init: {
        mode: cp ? 'control-plane' : 'local',
        trustDomain: this.#o.trustDomain ?? 'cluster.local',
        lb: this.#o.lb ?? 'round-robin',
        lbCursors: this.#lbCursors,
        maps,
        ...(this.#o.connectTimeoutMs ? { connectTimeoutMs: this.#o.connectTimeoutMs } : {}),
        ...(this.#o.idleTimeoutMs !== undefined ? { idleTimeoutMs: this.#o.idleTimeoutMs } : {}),
        accessLog: this.#o.accessLog ?? 'off',
        logLevel: this.#o.log.level,
      },
      log: this.#o.log,
      flows: this.flows,
      ...(cp ? { state: { state: cp.state, serving: () => cp.serving }, credentials: cp.secrets } : { localPods: this.workloads }),
      ...(this.#capture ? { capture: { hub: this.#capture.hub, recorder: this.#capture.recorder } } : {}),
    });
    if (!cp && count > 1) this.workloads.onChange = () => group.localPodsChanged();
    if (count > 1) this.#log.info({ proxies: count, workers: count - 1 }, 'proxy workers started: every pod\'s connections are spread over the main thread\'s proxy and the workers');
    return group;
  }

  /** The kernel splice for the proxy, unless turned off or the kernel cannot (then said once). */
  #splicer(redirect: Redirector, say = true): { splice?: KernelSplice } {
    if (this.#o.splice === false) return {};
    const s = redirect.splicer;
    if (!(s instanceof Error)) return { splice: s };
    if (say) this.#log.warn({ err: s }, 'the same-node kernel splice is unavailable on this kernel; same-node connections are relayed in the proxy');
    return {};
  }

  /** True once there is policy to serve (at once in local mode); false when stop() came first. */
  async #waitForState(): Promise<boolean> {
    const cp = this.#cp;
    const stopped = this.#stopSignal.signal;
    if (cp && !cp.serving && !stopped.aborted) {
      this.#log.info('waiting for the first xDS sync before opening listeners (no saved state to serve)');
      await Promise.race([cp.xds.ready, new Promise((r) => stopped.addEventListener('abort', r, { once: true }))]);
    }
    return !stopped.aborted;
  }

  /** Adopts what the records name (again after a reclaim); a pod that fails stays enrolled and is retried. */
  async #adopt(): Promise<void> {
    const enroller = this.#enroller!;
    const { adopted, removed, pending } = await enroller.adopt();
    for (const p of [...enroller.pods(), ...enroller.pendingPods()]) this.#remember(p.uid, p.namespace, p.name, p.ip, true);
    this.#adopted = true;
    if (adopted.length || removed.length || pending.length) this.#log.info({ adopted, removed: removed.length, pending }, 'adopted pods enrolled by a previous agent');
    this.metrics.enrolledPods.set(enroller.pods().length);
    for (const p of enroller.pods()) this.#requestCert(p.trustDomain, p.namespace, p.serviceAccount);
    this.#prune(); // certificates restored from disk for pods that left while no agent ran
  }

  /** Forgets the certificates (memory and disk) of identities no pod of the node has any more. */
  #prune(): void {
    if (this.#cp && this.#enroller) pruneIdentities(this.#cp.secrets, this.#enroller, this.#log);
    if (this.#enroller) this.#capture?.retainPods(new Set(this.#enroller.pods().map((p) => `${p.namespace}/${p.name}`)));
  }

  /** A pod that waited (pending) is served now. */
  #served(p: { uid: string; namespace: string; name: string; ip: string; trustDomain: string; serviceAccount: string }): void {
    this.#remember(p.uid, p.namespace, p.name, p.ip, true);
    this.metrics.enrolledPods.set(this.#enroller?.pods().length ?? 0);
    this.#requestCert(p.trustDomain, p.namespace, p.serviceAccount);
  }

  /**
   * Whether this agent's pod list is the node's truth: after adoption, and not once a newer
   * agent took the node over or this one is stopping (its list would withdraw the new pods).
   */
  get #reportsPods(): boolean {
    return this.#adopted && !this.#stopping && this.#node.supersededBy === undefined;
  }

  #remember(uid: string, namespace: string, name: string, ip: string, enrolled: boolean, meta?: PodMeta): void {
    const m = meta ?? this.#o.podSource?.lookup(namespace, name);
    this.workloads.set({ uid, namespace, name, ip, enrolled, serviceAccount: m?.serviceAccount ?? 'default', labels: m?.labels ?? {} });
  }

  /** Asks the CA for a pod identity's certificate ahead of need (HBONE), and keeps it rotated. */
  #requestCert(trustDomain: string, namespace: string, sa: string): void {
    const cp = this.#cp;
    if (!cp) return;
    const id = `spiffe://${trustDomain}/ns/${namespace}/sa/${sa}`;
    cp.secrets.get(id).catch((err: unknown) => this.#log.warn({ err, identity: id }, 'certificate request failed; will retry'));
  }

  #cniContext(): CniContext {
    return {
      enroller: this.#enroller!,
      workloads: this.workloads,
      cp: this.#cp,
      podSource: this.#o.podSource,
      trustDomain: this.#o.trustDomain,
      workloadWaitMs: this.#o.workloadWaitMs,
      metrics: this.metrics,
      log: this.#log,
      remember: (...a) => this.#remember(...a),
      requestCert: (...a) => this.#requestCert(...a),
    };
  }

  configDump(): object {
    return {
      node: this.node,
      mode: this.#cp ? 'control-plane' : 'local',
      ...(this.#cp
        ? {
            controlPlane: { address: this.#o.controlPlane!.address, connected: this.#cp.xds.connected, synced: this.#cp.xds.isReady },
            services: [...this.#cp.state.services()],
            policies: [...this.#cp.state.policies()],
            certificates: this.#cp.secrets.list(),
          }
        : {}),
      startedAt: this.#startedAt,
      ready: this.ready,
      ...(this.#kube ? { kubernetes: this.#kube.status() } : {}),
      // Which agent answered: during an upgrade two agents share the node's ports.
      agent: {
        pid: process.pid,
        notReady: this.notReadyReasons(),
        draining: this.#stopping !== undefined,
        holdsNode: this.#node.claim.holder() === process.pid,
        ...(this.#node.supersededBy !== undefined ? { supersededBy: this.#node.supersededBy } : {}),
        endpoints: this.#http?.status() ?? [],
        openConnections: this.#group?.openConnections() ?? 0,
        proxies: this.#group?.count ?? 1,
        workerRestarts: this.#group?.restarts ?? 0,
      },
      /** Enrolled in the kernel (connections refused) but not served by this agent yet: retried. */
      pendingPods: this.#enroller?.pending() ?? [],
      pods: this.#enroller?.pods().map((p) => ({
        uid: p.uid,
        namespace: p.namespace,
        name: p.name,
        ip: p.ip,
        serviceAccount: p.serviceAccount,
        identity: `spiffe://${p.trustDomain}/ns/${p.namespace}/sa/${p.serviceAccount}`,
        netns: p.netnsPath,
        cgroup: p.cgroupPath,
        exclusions: p.exclusions,
        enrolledAt: p.enrolledAt,
      })) ?? [],
      listeners: this.#proxy?.listeners() ?? [],
      ...(this.#group && this.#group.count > 1 ? { workerListeners: this.#group.workerListeners() } : {}),
      // The node-wide original-destination maps: how full, each pod's share, refusals, evictions.
      kernel: { origDst: readOrigDst(this.#redirect, this.#enroller, this.#log) ?? null },
      hbonePool: this.#group?.hboneSessions() ?? [],
      workloads: this.#cp ? [...this.#cp.state.workloads()] : this.workloads.all(),
      connections: [...this.flows.open(), ...(this.#group?.workerOpenFlows() ?? [])],
    };
  }

  async #serveHttp(): Promise<void> {
    this.#http = await serveAgentEndpoints({
      log: this.#o.log.child({ component: 'admin' }),
      admin: this.#o.admin ?? { host: '127.0.0.1', port: PORTS.admin },
      metricsAt: this.#o.metrics ?? { host: '0.0.0.0', port: PORTS.metrics },
      readyAt: this.#o.ready ?? { host: '0.0.0.0', port: PORTS.ready },
      notReady: () => this.notReadyReasons(),
      configDump: () => this.configDump(),
      flows: (limit) => (this.#group ? this.#group.recentFlows(limit) : this.flows.recent(limit)),
      metrics: () => (this.#group ? this.#group.metrics(this.metrics) : this.metrics.render()),
      capture: this.#capture?.route ?? captureOffRoute,
    });
  }

  /**
   * Stops, in two steps. At once it takes no new work: an agent it took the node from that
   * still runs gets the node back first (NodeHandoff.handBack), the CNI socket and the HTTP
   * endpoints close (the socket path is removed only while it is still this agent's), and so
   * do the pod listeners, which leaves new connections to an agent beside this one. Then
   * connections already open keep running until they end, for at most `drainMs` (default:
   * the option, else 30 s) or until endDrain(); what is left then is closed. Pinned programs
   * and map entries stay: pods keep failing closed until an agent adopts them.
   */
  stop(o: { drainMs?: number } = {}): Promise<void> {
    this.#stopping ??= this.#shutdown(o.drainMs ?? this.#o.drainMs ?? 30_000);
    return this.#stopping;
  }

  /** Ends a drain now (a second SIGTERM): the open connections are closed. */
  endDrain(): void {
    this.#endDrain.abort();
  }

  async #shutdown(drainMs: number): Promise<void> {
    this.#ready = false;
    this.#stopSignal.abort();
    await this.#kube?.stop();
    this.#enroller?.stop();
    const proxy = this.#group;
    const redirect = this.#redirect;
    await this.#node.handBack(() => (proxy && redirect ? proxy.inboundListeners().some((l) => redirect.isInboundListener(l.pod.ip, l.kind, l.fd)) : false));
    await this.#node.close();
    await this.#http?.close();
    let draining = false;
    const left = await proxy?.drain(drainMs, this.#endDrain.signal, (open) => {
      draining = true;
      this.#log.info({ open, drainSeconds: drainMs / 1000 }, 'draining: listeners closed, open connections keep running until they end or the drain period is over (signal again to close them now)');
    });
    if (left) this.#log.warn({ closed: left, by: this.#endDrain.signal.aborted ? 'signal' : 'drain period over' }, 'drain over: closed the connections still open');
    else if (draining) this.#log.info('drained: every open connection ended');
    await this.#group?.stop();
    await this.#cp?.stop();
    this.#capture?.stop();
    await this.#requests.close();
    this.#redirect?.close();
    this.#node.claim.release();
    this.#log.info('agent stopped');
  }
}
