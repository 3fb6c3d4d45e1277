// The control plane's wiring: starts the config source, the CA, the gRPC listener with its
// three services (delta ADS, CA, pod status) behind the node-auth gate, and the admin
// endpoint, and recomputes the xDS resources whenever the config or the reported pods change.
import { hostname } from 'node:os';
import { join } from 'node:path';
import { writeFileSync } from 'node:fs';
import * as grpc from '@grpc/grpc-js';
import { UsageError } from '../errors.js';
import type { Pod } from '../k8s/index.js';
import { log as rootLog, type Logger } from '../log.js';
import { hostPort, PORTS } from '../net/index.js';
import {
  adsService,
  authorizationFromProto,
  caService,
  codecs,
  podStatusService,
  serviceFromProto,
  TYPE_ADDRESS,
  TYPE_AUTHORIZATION,
  TYPE_REQUEST_AUTHN,
  TYPE_SERVICE_ROUTES,
  l7RulesToProto,
  requestAuthnToProto,
  serviceRoutesToProto,
  workloadFromProto,
  XdsServer,
  type PbAuthorization,
  type PbDeltaRequest,
  type PbDeltaResponse,
  type PbService,
  type PbWorkload,
} from '../xds/index.js';
import { debugJson, startAdmin, type AdminServer } from './admin.js';
import { parseHostPort, servingNames } from './serving.js';
import { agentAuth, checkAgentAuthOptions, type AgentAuth, type AgentAuthOptions } from './agent-auth.js';
import { loadOrCreateToken } from './auth.js';
import type { EffectiveMtls } from './authz.js';
import { CertificateAuthority } from './ca.js';
import { caServiceImpl } from './ca-service.js';
import { nodeGate } from './node-auth.js';
import { mintNodeToken } from './node-credentials.js';
import { placementAllows, podIndex } from './placement.js';
import { PodStatusStore } from './podstatus.js';
import { podStatusServiceImpl } from './podstatus-service.js';
import { KubeSource, openSource, readiness, type KubeSourceOptions } from './kube-source.js';
import { endpointSliceWorkloads } from './kube-translate.js';
import { ConfigSource, type ConfigSnapshot } from './sources.js';
import { DEFAULT_MESH, runningPods, serviceKey, translateService, translateWorkload, type MeshSettings, type RunningPod } from './translate.js';
import { describe, type ConfigProblem } from './validate.js';
import { translateConfig } from './check.js';
import type { RequestAuthentication, ServiceRoutes } from '../state/index.js';

export const DEFAULT_LISTEN = hostPort('127.0.0.1', PORTS.controlPlane);
export const DEFAULT_ADMIN = hostPort('127.0.0.1', PORTS.controlPlaneAdmin);

export interface ControlPlaneOptions {
  /** The directory of Kubernetes YAML (the one the simulator reads); or `kubernetes`. */
  configDir?: string;
  /** Read everything from the Kubernetes API instead: a kubeconfig file or the in-cluster config. */
  kubernetes?: Omit<KubeSourceOptions, 'mesh' | 'logger'>;
  /** Where the admin token, node secret, pod status, root CA and serving certificate are kept. */
  stateDir: string;
  /** The HMAC key node tokens are signed with; default `<stateDir>/node-secret` (generated). Directory mode only. */
  nodeSecretFile?: string;
  /** Kubernetes mode: whose projected ServiceAccount tokens prove agents' nodes (agent-auth.ts). */
  agentAuth?: AgentAuthOptions;
  /** The node that pods without spec.nodeName run on (the simulator's default node); default the host name. */
  defaultNode?: string;
  /** gRPC listener (xDS, CA, pod status): `host:port`; port 0 picks one. Default 127.0.0.1:15012. */
  listen?: string;
  /** HTTP admin listener; default 127.0.0.1:15014. */
  admin?: string;
  trustDomain?: string;
  clusterId?: string;
  clusterDomain?: string;
  rootNamespace?: string;
  rootCertFile?: string;
  rootKeyFile?: string;
  /** Workload certificate lifetime when a request names none (default 24 h). */
  certTtlSeconds?: number;
  /** The longest workload certificate lifetime granted (default 7 days). */
  maxCertTtlSeconds?: number;
  /** Extra DNS names or IPs for the serving certificate. */
  serverNames?: string[];
  debounceMs?: number;
  rescanMs?: number;
  logger?: Logger;
}

export interface ControlPlanePaths {
  stateDir: string;
  /** Opens the admin endpoint's /debug pages to non-loopback peers; proves no node. */
  adminToken: string;
  /** The key node tokens are signed with; none on Kubernetes, where agents use ServiceAccount tokens. */
  nodeSecret?: string;
  /** What nodes reported, kept across restarts. */
  podStatus: string;
  rootCert: string;
  servingCert: string;
  servingKey: string;
}

/**
 * Problems of objects kept from an earlier text of their file (it has errors now) point at the
 * file's first line and say so: the line they were found on is not in the current text.
 */
function keptAt(snap: ConfigSnapshot, problems: ConfigProblem[]): ConfigProblem[] {
  const kept = new Set<string>();
  for (const list of Object.values(snap)) for (const o of list as { source?: { kept?: boolean; file: string }; kind?: string; metadata?: { namespace: string; name: string } }[]) {
    if (o?.source?.kept && o.kind && o.metadata) kept.add(`${o.source.file}|${describe(o as { kind: string; metadata: { namespace: string; name: string } })}`);
  }
  if (kept.size === 0) return problems;
  return problems.map((p) => (p.resource && kept.has(`${p.file}|${p.resource}`) ? { ...p, line: 1, message: `${p.message} (in the last good version of this file, served while the file has errors)` } : p));
}

export class ControlPlane {
  readonly mesh: MeshSettings;
  readonly paths: ControlPlanePaths;
  readonly xds: XdsServer;
  /** Where the config comes from: the directory, or the Kubernetes API. */
  readonly source: ConfigSource | KubeSource;
  readonly pods: PodStatusStore;
  readonly ca: CertificateAuthority;
  readonly adminToken: string;
  /** Where pods without spec.nodeName run (directory mode; on Kubernetes such a pod runs nowhere). */
  readonly defaultNode: string;
  /** How agents prove their node: node tokens, or on Kubernetes ServiceAccount tokens. */
  readonly #auth: AgentAuth;
  /** `host:port` of the gRPC listener. */
  readonly address: string;
  /** `host:port` of the admin listener. */
  readonly adminAddress: string;
  readonly #server: grpc.Server;
  readonly #admin: AdminServer;
  readonly #log: Logger;
  #problems: ConfigProblem[] = [];
  #reportedPolicyProblems = new Set<string>();
  #running: RunningPod[] = [];
  #mtls = new Map<string, EffectiveMtls>();
  #workloads: PbWorkload[] = [];
  #services: PbService[] = [];
  #authorizations: PbAuthorization[] = [];
  #routes: ServiceRoutes[] = [];
  #requestAuthns: RequestAuthentication[] = [];
  #stopped = false;

  private constructor(init: {
    mesh: MeshSettings;
    paths: ControlPlanePaths;
    xds: XdsServer;
    source: ConfigSource | KubeSource;
    ca: CertificateAuthority;
    pods: PodStatusStore;
    adminToken: string;
    auth: AgentAuth;
    defaultNode: string;
    server: grpc.Server;
    address: string;
    admin: AdminServer;
    log: Logger;
  }) {
    this.mesh = init.mesh;
    this.paths = init.paths;
    this.xds = init.xds;
    this.source = init.source;
    this.ca = init.ca;
    this.pods = init.pods;
    this.adminToken = init.adminToken;
    this.#auth = init.auth;
    this.defaultNode = init.defaultNode;
    this.#server = init.server;
    this.address = init.address;
    this.#admin = init.admin;
    this.adminAddress = init.admin.address;
    this.#log = init.log;
  }

  static async start(opts: ControlPlaneOptions): Promise<ControlPlane> {
    const log = (opts.logger ?? rootLog).child({ component: 'control-plane' });
    const mesh: MeshSettings = {
      trustDomain: opts.trustDomain ?? DEFAULT_MESH.trustDomain,
      clusterId: opts.clusterId ?? DEFAULT_MESH.clusterId,
      clusterDomain: opts.clusterDomain ?? DEFAULT_MESH.clusterDomain,
      rootNamespace: opts.rootNamespace ?? DEFAULT_MESH.rootNamespace,
    };
    // Bad addresses fail now, not after a long initial sync.
    parseHostPort(opts.listen ?? DEFAULT_LISTEN, '--listen');
    parseHostPort(opts.admin ?? DEFAULT_ADMIN, '--admin');
    checkAgentAuthOptions(opts);

    const config = await openSource({ ...opts, mesh, logger: opts.logger ?? rootLog });
    try {
      return await ControlPlane.#serve(opts, mesh, log, config);
    } catch (err) {
      config.stop();
      throw err;
    }
  }

  static async #serve(opts: ControlPlaneOptions, mesh: MeshSettings, log: Logger, config: ConfigSource | KubeSource): Promise<ControlPlane> {
    const listen = parseHostPort(opts.listen ?? DEFAULT_LISTEN, '--listen');
    const adminAt = parseHostPort(opts.admin ?? DEFAULT_ADMIN, '--admin');
    const adminTokenFile = join(opts.stateDir, 'admin-token');
    const adminToken = loadOrCreateToken(adminTokenFile);
    const defaultNode = opts.defaultNode ?? hostname();
    // On Kubernetes the agents' ServiceAccount tokens prove their nodes: no node secret is made.
    const auth = agentAuth({ ...opts, kube: config instanceof KubeSource ? config.api : undefined, defaultNode, adminToken, log });
    const { placement } = auth;
    const podStatusFile = join(opts.stateDir, 'pod-status.json');
    const pods = new PodStatusStore({ file: podStatusFile, logger: log });
    const ttls = { defaultTtlSeconds: opts.certTtlSeconds, maxTtlSeconds: opts.maxCertTtlSeconds };
    const ca = await CertificateAuthority.open({ stateDir: opts.stateDir, trustDomain: mesh.trustDomain, rootCertFile: opts.rootCertFile, rootKeyFile: opts.rootKeyFile, ...ttls, logger: opts.logger ?? rootLog });
    const serving = await ca.issueServingCert(servingNames(listen.host, opts.serverNames ?? []));
    const paths: ControlPlanePaths = {
      stateDir: opts.stateDir,
      adminToken: adminTokenFile,
      ...(auth.nodeSecretFile ? { nodeSecret: auth.nodeSecretFile } : {}),
      podStatus: podStatusFile,
      rootCert: ca.rootCertFile,
      servingCert: join(opts.stateDir, 'cert.pem'),
      servingKey: join(opts.stateDir, 'key.pem'),
    };
    writeFileSync(paths.servingCert, serving.certPem + ca.rootCertPem, { mode: 0o644 });
    writeFileSync(paths.servingKey, serving.keyPem, { mode: 0o600 });

    const xds = new XdsServer({ typeUrls: [TYPE_ADDRESS, TYPE_AUTHORIZATION, TYPE_SERVICE_ROUTES, TYPE_REQUEST_AUTHN], logger: opts.logger ?? rootLog });
    const server = new grpc.Server({ 'grpc.keepalive_permit_without_calls': 1, 'grpc.http2.min_ping_interval_without_data_ms': 10_000 });
    const creds = grpc.ServerCredentials.createSsl(null, [{ cert_chain: Buffer.from(serving.certPem), private_key: Buffer.from(serving.keyPem) }], false);
    const bindHost = listen.host.includes(':') ? `[${listen.host}]` : listen.host;
    const port = await new Promise<number>((resolve, reject) =>
      server.bindAsync(`${bindHost}:${listen.port}`, creds, (err, p) => (err ? reject(new UsageError(`cannot listen on ${opts.listen ?? DEFAULT_LISTEN}: ${err.message}`, { cause: err })) : resolve(p))),
    );
    let cp: ControlPlane | undefined;
    let admin: AdminServer;
    try {
      admin = await startAdmin(adminAt.host, adminAt.port, { ready: () => cp?.ready ?? false, readyDetail: () => cp?.readyDetail ?? 'starting', configErrors: () => cp!.configErrors(), resources: () => cp!.resources() }, log, adminToken);
    } catch (err) {
      server.forceShutdown();
      throw new UsageError(`cannot listen on admin address ${opts.admin ?? DEFAULT_ADMIN}: ${(err as Error).message}`, { cause: err });
    }
    cp = new ControlPlane({ mesh, paths, xds, source: config, ca, pods, adminToken, auth, defaultNode, server, address: `${bindHost}:${port}`, admin, log });
    // Every service answers only node agents with a valid credential (a node token, or on
    // Kubernetes the agent pod's ServiceAccount token), and knows which node calls from it alone.
    const gate = nodeGate(auth.authenticate, log);
    const configPods = () => config.snapshot().pods;
    server.addService(adsService, {
      DeltaAggregatedResources: gate({ what: 'an xDS stream' }, (caller, call: grpc.ServerDuplexStream<PbDeltaRequest, PbDeltaResponse>) => xds.serve(call, caller.node)),
    });
    server.addService(caService, caServiceImpl(gate, { ca, configPods, pods, placement, log }));
    server.addService(podStatusService, podStatusServiceImpl(gate, { pods, configPods, placement, onChange: () => cp!.#recompute(), log }));
    cp.#recompute();
    config.on('change', () => cp!.#recompute());
    if (config instanceof ConfigSource) config.start();
    const from = config instanceof KubeSource ? { kubernetes: config.api.server } : { configDir: opts.configDir };
    const agents = auth.agentServiceAccount ? { agentServiceAccount: auth.agentServiceAccount, agentTokenAudience: auth.audience } : { defaultNode };
    log.info({ address: cp.address, admin: cp.adminAddress, ...from, trustDomain: mesh.trustDomain, ...agents, ...paths }, 'control plane started');
    return cp;
  }

  /** A node token for `node` (what `nodemesh control-plane node-token` prints). Directory mode only. */
  nodeToken(node: string, podCidrs: string[]): string {
    if (this.#auth.nodeSecret === undefined) throw new UsageError("this control plane reads the Kubernetes API: agents authenticate with their pod's ServiceAccount token, not node tokens");
    return mintNodeToken(this.#auth.nodeSecret, { node, podCidrs });
  }

  /** On Kubernetes: the ServiceAccount (`namespace/name`) whose pod-bound tokens prove an agent's node. */
  get agentServiceAccount(): string | undefined {
    return this.#auth.agentServiceAccount;
  }

  /** The directory source; a UsageError when the control plane reads the Kubernetes API. */
  get config(): ConfigSource {
    if (this.source instanceof ConfigSource) return this.source;
    throw new UsageError('this control plane reads the Kubernetes API, not a config directory; use .source');
  }

  /** True once the config is loaded and the listeners are up (and the Kubernetes source not degraded). */
  get ready(): boolean {
    return !this.#stopped && readiness(this.source).ready;
  }

  /** The readiness line: `ready`, `stopped`, or what the Kubernetes source says (`degraded: …`). */
  get readyDetail(): string {
    return this.#stopped ? 'stopped' : readiness(this.source).detail;
  }

  async stop(): Promise<void> {
    if (this.#stopped) return;
    this.#stopped = true;
    this.source.stop();
    this.xds.closeAll();
    await new Promise<void>((resolve) => {
      const t = setTimeout(() => {
        this.#server.forceShutdown();
        resolve();
      }, 2000);
      this.#server.tryShutdown(() => {
        clearTimeout(t);
        resolve();
      });
    });
    await this.#admin.close();
    this.#log.info('control plane stopped');
  }

  /** Config and policy problems, newest config first. */
  problems(): ConfigProblem[] {
    return this.#problems;
  }

  configErrors(): { errors: number; warnings: number; problems: ConfigProblem[] } {
    const p = this.#problems;
    return { errors: p.filter((x) => x.severity === 'error').length, warnings: p.filter((x) => x.severity === 'warning').length, problems: p };
  }

  resources(): unknown {
    const snap = this.source.snapshot();
    return debugJson({
      mesh: this.mesh,
      workloads: this.#workloads.map((w) => ({ ...workloadFromProto(w, w.uid), mtls: this.#mtls.get(w.uid) })),
      services: this.#services.map((s) => serviceFromProto(s, `${s.namespace}/${s.hostname}`)),
      authorizations: this.#authorizations.map((a) => authorizationFromProto(a, `${a.namespace}/${a.name}`)),
      httpRoutes: snap.httpRoutes.map((r) => ({ namespace: r.metadata.namespace, name: r.metadata.name, source: r.source, ...r.route })),
      routes: this.#routes,
      requestAuthentications: this.#requestAuthns,
      pods: {
        configured: snap.pods.length,
        running: this.#running.map((r) => ({ namespace: r.pod.metadata.namespace, name: r.pod.metadata.name, ip: r.ip, node: r.node, phase: r.phase })),
      },
      nodes: this.pods.nodes().map((n) => ({ node: n.node, pods: n.pods.length, reportedAt: n.reportedAt })),
      xds: { streams: this.xds.streams(), nacks: this.xds.nacks() },
      ...(this.source instanceof KubeSource ? { kubernetes: { server: this.source.api.server, ...this.source.status(), statusWrites: this.source.statusWrites } } : {}),
    });
  }

  /** Recomputes every resource from the config and pod status, and pushes what changed. */
  #recompute(): void {
    const snap: ConfigSnapshot = this.source.snapshot();
    const { policySet, routes, authns, problems: found } = translateConfig(snap, this.mesh);
    const problems = keptAt(snap, found);
    this.#logPolicyProblems(problems);
    this.#problems = [...snap.problems, ...problems];
    this.#routes = routes;
    this.#requestAuthns = authns;
    // Each pod only from the node the config places it on (a stored report included).
    this.#running = runningPods(snap.pods, this.pods.pods(placementAllows(podIndex(snap.pods), this.#auth.placement)));
    const byIp = new Map<string, RunningPod>();
    for (const r of this.#running) {
      const other = byIp.get(r.ip);
      if (other) this.#log.warn({ ip: r.ip, pods: [`${other.pod.metadata.namespace}/${other.pod.metadata.name}`, `${r.pod.metadata.namespace}/${r.pod.metadata.name}`] }, 'two pods have the same IP');
      byIp.set(r.ip, r);
    }
    const inputs = { services: snap.services, namespaces: snap.namespaces, policiesFor: (p: Pod) => policySet.policiesFor(p) };
    this.#workloads = this.#running.map((r) => translateWorkload(this.mesh, r, inputs));
    // Endpoints of Services without selectors, after the pods so #mtls below stays aligned.
    this.#workloads.push(...endpointSliceWorkloads(this.mesh, snap.endpointSlices, snap.services, new Set(byIp.keys())));
    this.#mtls = new Map(this.#running.map((r, i) => [this.#workloads[i]!.uid, policySet.mtlsFor(r.pod)]));
    this.#services = snap.services.map((s) => translateService(this.mesh, s));
    // HTTP attributes travel beside the conservative L4 rules (docs/xds.md, l7_rules).
    this.#authorizations = policySet.authorizations.map((a) => {
      const l7 = policySet.l7Rules.get(`${a.namespace}/${a.name}`);
      return l7 ? { ...a, l7Rules: l7RulesToProto(l7) } : a;
    });
    const addresses = [
      ...this.#workloads.map((w) => ({ name: w.uid, value: codecs.address.encode({ workload: w }) })),
      ...snap.services.map((s, i) => ({ name: serviceKey(this.mesh, s), value: codecs.address.encode({ service: this.#services[i]! }) })),
    ];
    const auths = this.#authorizations.map((a) => ({ name: `${a.namespace}/${a.name}`, value: codecs.authorization.encode(a) }));
    const sets = [
      this.xds.setResources(TYPE_ADDRESS, addresses),
      this.xds.setResources(TYPE_AUTHORIZATION, auths),
      this.xds.setResources(TYPE_SERVICE_ROUTES, this.#routes.map((r) => ({ name: r.service, value: codecs.serviceRoutes.encode(serviceRoutesToProto(r)) }))),
      this.xds.setResources(TYPE_REQUEST_AUTHN, this.#requestAuthns.map((r) => ({ name: `${r.namespace}/${r.name}`, value: codecs.requestAuthn.encode(requestAuthnToProto(r)) }))),
    ];
    const changed = sets.reduce((n, x) => n + x.changed.length, 0);
    const removed = sets.reduce((n, x) => n + x.removed.length, 0);
    if (changed + removed > 0) {
      this.#log.info({ workloads: this.#workloads.length, services: this.#services.length, authorizations: auths.length, routes: this.#routes.length, requestAuthentications: this.#requestAuthns.length, changed, removed }, 'resources updated');
    }
  }

  #logPolicyProblems(problems: ConfigProblem[]): void {
    const next = new Set<string>();
    for (const p of problems) {
      const key = `${p.file}|${p.line}|${p.message}`;
      next.add(key);
      if (this.#reportedPolicyProblems.has(key)) continue;
      const fields = { code: p.code, file: p.file, line: p.line, resource: p.resource };
      if (p.severity === 'warning') this.#log.warn(fields, `${p.file}:${p.line}: ${p.message}`);
      else this.#log.error(fields, `${p.file}:${p.line}: ${p.message}`);
    }
    this.#reportedPolicyProblems = next;
  }
}
