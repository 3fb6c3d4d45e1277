// The data-path benchmarks' cluster (mesh.ts, capture.ts): four simulated nodes, client and
// server pods in and out of the mesh, the five nodemesh paths between them (mesh.ts adds
// haproxy.ts's sidecars), and running the real load generators inside the client pods.
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { cliPath, multiNodeNodes, nodeAgentPid } from '../cluster/index.js';
import { listPods } from '../sim/index.js';
import { parseIperf, parseWrk, type WrkResult } from './tools.js';

export const SOCKPERF_BASE = 11111;
/** Ports `sockperf sr` serves on each server pod (one per latency connection). */
export const SOCKPERF_PORTS = 16;
/** The server pods' `iperf3 -s`. */
export const IPERF_PORT = 5201;
/** The server pods' nginx port that stays L4 in every benchmark (no Service targets it). */
export const HTTP_PORT = 8080;

/** The paths through nodemesh's own agents (and the no-mesh baselines). */
export type PathName = 'direct-same' | 'direct-cross' | 'ambient-same' | 'ambient-cross' | 'sidecar';

export interface PathDef<N extends string = PathName> {
  name: N;
  label: string;
  client: string;
  server: string;
  /** Nodes whose agents carry this path's traffic (CPU is summed over them). */
  proxies: string[];
  /**
   * The address the client dials instead of the server pod's IP (on the same ports): a sidecar
   * listening inside the client pod, as haproxy.ts's is on loopback.
   */
  dial?: string;
}

export const PATHS: PathDef[] = [
  { name: 'direct-same', label: 'no mesh, same node', client: 'plain/client', server: 'plain/local', proxies: [] },
  { name: 'direct-cross', label: 'no mesh, cross node', client: 'plain/client', server: 'plain/remote', proxies: [] },
  { name: 'ambient-same', label: 'ambient, same node (fast path)', client: 'mesh/client', server: 'mesh/local', proxies: ['node-a'] },
  { name: 'ambient-cross', label: 'ambient, cross node (HBONE)', client: 'mesh/client', server: 'mesh/remote', proxies: ['node-a', 'node-b'] },
  { name: 'sidecar', label: 'sidecar (proxy per pod, HBONE)', client: 'sidecar/client', server: 'sidecar/server', proxies: ['node-c', 'node-d'] },
];

export const NODES = ['node-a', 'node-b', 'node-c', 'node-d'];

export const BODY = 'x'.repeat(1024);

/**
 * An nginx config that runs unprivileged from `dir` (its pid and temp paths under it): one
 * worker, no access log, `server` the server block's body; `http` goes before the server.
 */
export function nginxConfig(dir: string, name: string, server: string, http = ''): string {
  const t = join(dir, `nginx-${name}`);
  return `worker_processes 1;
pid ${t}.pid;
error_log stderr;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path ${t}-body;
  proxy_temp_path ${t}-proxy;
  fastcgi_temp_path ${t}-fastcgi;
  uwsgi_temp_path ${t}-uwsgi;
  scgi_temp_path ${t}-scgi;
  keepalive_requests 1000000;
  ${http}
  server {
    ${server}
  }
}
`;
}

function nginxConf(dir: string, name: string): string {
  // 8081 (HTTP/1.1) and 8082 (h2c, prior knowledge) are for l7.ts, whose Services target only
  // them: 8080 has no Service, so it stays L4 in every benchmark.
  return nginxConfig(dir, name, `listen ${HTTP_PORT} reuseport;
    listen 8081;
    listen 8082 http2;
    location / { default_type text/plain; return 200 "${BODY}"; }`);
}

function serverPod(dir: string, ns: string, name: string, node: string): string {
  writeFileSync(join(dir, `nginx-${ns}-${name}.conf`), nginxConf(dir, `${ns}-${name}`));
  return `---
apiVersion: v1
kind: Pod
metadata: { name: ${name}, namespace: ${ns}, labels: { app: ${name} } }
spec:
  nodeName: ${node}
  containers:
  - { name: iperf3, command: [iperf3, -s, -p, "${IPERF_PORT}"], ports: [{ containerPort: ${IPERF_PORT} }] }
  - { name: sockperf, command: [sockperf, sr, -f, sockperf-server.feed, -F, e], ports: [{ containerPort: ${SOCKPERF_BASE} }] }
  - { name: nginx, command: [nginx, -p, ., -c, nginx-${ns}-${name}.conf, -e, stderr, -g, "daemon off;"], ports: [{ containerPort: ${HTTP_PORT} }] }
`;
}

function clientPod(ns: string, name: string, node: string): string {
  return `---
apiVersion: v1
kind: Pod
metadata: { name: ${name}, namespace: ${ns} }
spec:
  nodeName: ${node}
  containers:
  - { name: idle, command: [sleep, infinity] }
`;
}

/** Writes the benchmark cluster's config directory (pods.yaml, nginx configs, sockperf feed). */
export function writeBenchConfig(dir: string): void {
  writeFileSync(join(dir, 'sockperf-server.feed'), Array.from({ length: SOCKPERF_PORTS }, (_, i) => `T:0.0.0.0:${SOCKPERF_BASE + i}`).join('\n') + '\n');
  const ns = (name: string, ambient: boolean) => `---
apiVersion: v1
kind: Namespace
metadata: { name: ${name}${ambient ? ', labels: { nodemesh.io/dataplane-mode: ambient }' : ''} }
`;
  const yaml = [
    ns('plain', false),
    ns('mesh', true),
    ns('sidecar', true),
    clientPod('plain', 'client', 'node-a'),
    serverPod(dir, 'plain', 'local', 'node-a'),
    serverPod(dir, 'plain', 'remote', 'node-b'),
    clientPod('mesh', 'client', 'node-a'),
    serverPod(dir, 'mesh', 'local', 'node-a'),
    serverPod(dir, 'mesh', 'remote', 'node-b'),
    // Sidecar mode: each pod alone on a node, so each has a proxy of its own.
    clientPod('sidecar', 'client', 'node-c'),
    serverPod(dir, 'sidecar', 'server', 'node-d'),
  ].join('');
  writeFileSync(join(dir, 'pods.yaml'), yaml);
}

/** The benchmark cluster once it is up: pod IPs, agents, and commands run inside pods. */
export class BenchCluster {
  readonly ips = new Map<string, string>();
  /** Each node's agent, by node name. */
  readonly agents = new Map<string, number>();
  constructor(readonly sd: string, readonly dir: string, readonly seconds: number) {}

  /** Reads the pods' IPs and the agents' PIDs (again after an agent restarts). */
  async refresh(): Promise<void> {
    for (const p of await listPods({ stateDir: this.sd })) this.ips.set(`${p.namespace}/${p.name}`, p.ip);
    this.agents.clear();
    for (const n of multiNodeNodes(this.sd)) {
      const pid = nodeAgentPid(n);
      if (pid) this.agents.set(n.name, pid);
    }
  }

  exec(pod: string, argv: string[], extraSeconds = 30): string {
    const r = spawnSync(cliPath, ['sim', 'exec', '--state-dir', this.sd, pod, '--', ...argv], { encoding: 'utf8', timeout: (this.seconds + extraSeconds) * 1000, maxBuffer: 64 << 20 });
    if (r.status !== 0) throw new Error(`${argv.join(' ')} in ${pod} failed (exit ${r.status}): ${r.stderr}${r.stdout}`.slice(0, 2000));
    return `${r.stdout}${r.stderr}`;
  }

  ip(pod: string): string {
    const ip = this.ips.get(pod);
    if (!ip) throw new Error(`no pod ${pod}`);
    return ip;
  }

  agentPid(node: string): number {
    const pid = this.agents.get(node);
    if (!pid) throw new Error(`the agent of ${node} is not running`);
    return pid;
  }

  /** The address the path's client dials: its `dial`, else the server pod's IP. */
  target(p: PathDef<string>): string {
    return p.dial ?? this.ip(p.server);
  }

  /** iperf3 from the path's client to its server, one stream for `seconds`: Gbit/s received. */
  iperf(p: PathDef<string>): number {
    return parseIperf(this.exec(p.client, ['iperf3', '-c', this.target(p), '-p', String(IPERF_PORT), '-t', String(this.seconds), '-J']));
  }

  /** wrk from the path's client to its server's nginx: `conns` connections, keep-alive or a new connection per request. */
  wrk(p: PathDef<string>, conns: number, keepAlive: boolean): WrkResult {
    return parseWrk(this.exec(p.client, ['wrk', '-t', '1', '-c', String(conns), '-d', `${this.seconds}s`, ...(keepAlive ? [] : ['-H', 'Connection: close']), `http://${this.target(p)}:${HTTP_PORT}/`]));
  }

  /** The PIDs of the agents that carry the path. */
  pids(p: PathDef<string>): number[] {
    return p.proxies.map((n) => this.agentPid(n));
  }
}
