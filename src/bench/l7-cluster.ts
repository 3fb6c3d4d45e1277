// The L7 benchmark's cluster: mesh.ts's four nodes and pods, plus HTTP Services that target only
// the servers' nginx 8081 (HTTP/1.1) and 8082 (h2c), and nginx as a reverse proxy in a plain pod
// on the client's node (the native reference); the seven paths and how each is measured.
import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { curlIn, multiNodeNodes } from '../cluster/index.js';
import type { SimNodeInfo } from '../sim/index.js';
import { h2loadRateArgs, h2loadThroughputArgs, parseH2load, parseH2loadLog, type H2loadResult, type LatencyResult } from './h2load.js';
import { BenchCluster, nginxConfig, writeBenchConfig } from './pods.js';
import type { PathRuntime } from './runtime-probe.js';
import { cpuSeconds, parseWrk, type WrkResult } from './tools.js';

export const VIP = { local: '10.96.70.10', remote: '10.96.70.11', sidecar: '10.96.70.12' } as const;
/** The Services' ports: 80 → 8081 (appProtocol http), 82 → 8082 (kubernetes.io/h2c). */
export const SVC_H1 = 80;
export const SVC_H2 = 82;
export const POD_H1 = 8081;
export const POD_H2 = 8082;
/** The reverse proxy's listeners: HTTP/1.1 to the same-node and cross-node server, then h2c. */
export const RP_PORTS = { h1Same: 8091, h1Cross: 8092, h2Same: 8093, h2Cross: 8094 } as const;
const RP_POD = 'plain/rproxy';
const RP_CONF = 'nginx-rproxy.conf';

export type L7PathName = 'direct-same' | 'direct-cross' | 'ambient-same' | 'ambient-cross' | 'sidecar' | 'nginx-same' | 'nginx-cross';

export interface L7Path {
  name: L7PathName;
  label: string;
  client: string;
  /** The host the client dials: a pod (its IP, read after `up`) or a Service VIP. */
  target: { pod: string } | { vip: string };
  h1Port: number;
  h2Port: number;
  /** Which no-mesh path it is compared with. */
  side: 'same' | 'cross';
  /** Nodes whose agents carry it (CPU summed over them); 'nginx' for the reverse proxy. */
  proxies: string[] | 'nginx';
}

export const L7_PATHS: L7Path[] = [
  { name: 'direct-same', label: 'no mesh, same node', client: 'plain/client', target: { pod: 'plain/local' }, h1Port: POD_H1, h2Port: POD_H2, side: 'same', proxies: [] },
  { name: 'direct-cross', label: 'no mesh, cross node', client: 'plain/client', target: { pod: 'plain/remote' }, h1Port: POD_H1, h2Port: POD_H2, side: 'cross', proxies: [] },
  { name: 'ambient-same', label: 'ambient L7, same node', client: 'mesh/client', target: { vip: VIP.local }, h1Port: SVC_H1, h2Port: SVC_H2, side: 'same', proxies: ['node-a'] },
  { name: 'ambient-cross', label: 'ambient L7, cross node (HBONE)', client: 'mesh/client', target: { vip: VIP.remote }, h1Port: SVC_H1, h2Port: SVC_H2, side: 'cross', proxies: ['node-a', 'node-b'] },
  { name: 'sidecar', label: 'sidecar L7 (proxy per pod, HBONE)', client: 'sidecar/client', target: { vip: VIP.sidecar }, h1Port: SVC_H1, h2Port: SVC_H2, side: 'cross', proxies: ['node-c', 'node-d'] },
  { name: 'nginx-same', label: 'nginx reverse proxy, same node', client: 'plain/client', target: { pod: RP_POD }, h1Port: RP_PORTS.h1Same, h2Port: RP_PORTS.h2Same, side: 'same', proxies: 'nginx' },
  { name: 'nginx-cross', label: 'nginx reverse proxy, cross node', client: 'plain/client', target: { pod: RP_POD }, h1Port: RP_PORTS.h1Cross, h2Port: RP_PORTS.h2Cross, side: 'cross', proxies: 'nginx' },
];

const service = (ns: string, name: string, ip: string) => `---
apiVersion: v1
kind: Service
metadata: { name: ${name}, namespace: ${ns} }
spec:
  clusterIP: ${ip}
  selector: { app: ${name} }
  ports:
  - { name: http, port: ${SVC_H1}, targetPort: ${POD_H1}, appProtocol: http }
  - { name: h2c, port: ${SVC_H2}, targetPort: ${POD_H2}, appProtocol: kubernetes.io/h2c }
`;

/**
 * mesh.ts's config (writeBenchConfig) plus the Services and the reverse-proxy pod. Its nginx
 * needs the servers' pod IPs, known only after `up`: the container waits for its config file,
 * which `writeReverseProxyConfig` writes then.
 */
export function writeL7BenchConfig(dir: string): void {
  writeBenchConfig(dir);
  const start = `until [ -f ${RP_CONF} ]; do sleep 0.1; done; exec nginx -p . -c ${RP_CONF} -e stderr -g 'daemon off;'`;
  const extra = [
    service('mesh', 'local', VIP.local),
    service('mesh', 'remote', VIP.remote),
    service('sidecar', 'server', VIP.sidecar),
    `---
apiVersion: v1
kind: Pod
metadata: { name: rproxy, namespace: plain }
spec:
  nodeName: node-a
  containers:
  - { name: nginx, command: [sh, -c, ${JSON.stringify(start)}] }
`,
  ].join('');
  const file = join(dir, 'pods.yaml');
  writeFileSync(file, readFileSync(file, 'utf8') + extra);
}

/** nginx as a reverse proxy: one worker, keep-alive upstreams, HTTP/1.1 and h2c listeners. */
export function reverseProxyConfig(dir: string, local: string, remote: string): string {
  const upstream = (name: string, ip: string) => `upstream ${name} { server ${ip}:${POD_H1}; keepalive 32; keepalive_requests 1000000; }`;
  const proxy = (up: string) => `location / { proxy_pass http://${up}; proxy_http_version 1.1; proxy_set_header Connection ""; }`;
  const server = (listen: string, up: string) => `server { listen ${listen}; ${proxy(up)} }`;
  const http = [upstream('local', local), upstream('remote', remote), server(String(RP_PORTS.h1Cross), 'remote'), server(`${RP_PORTS.h2Same} http2`, 'local'), server(`${RP_PORTS.h2Cross} http2`, 'remote')].join('\n  ');
  return nginxConfig(dir, 'rproxy', `listen ${RP_PORTS.h1Same};\n    ${proxy('local')}`, http);
}

export interface L7Sample {
  h1: WrkResult;
  /** Undefined when the path's HTTP/2 failed at warm-up (then it is not measured). */
  h2?: H2loadResult;
  lat: LatencyResult;
  /** The path's agents' event-loop delay and GC during the latency run (none for nginx or no mesh). */
  rt?: PathRuntime;
  /** Proxy CPU ms per 1,000 requests during the wrk and the h2load throughput runs. */
  cpuH1: number;
  cpuH2: number;
}

export class L7Cluster extends BenchCluster {
  /** Starts the reverse proxy now that the servers' IPs are known, and waits until it answers. */
  async startReverseProxy(): Promise<void> {
    const tmp = join(this.dir, `${RP_CONF}.tmp`);
    writeFileSync(tmp, reverseProxyConfig(this.dir, this.ip('plain/local'), this.ip('plain/remote')));
    renameSync(tmp, join(this.dir, RP_CONF));
    const url = `http://${this.ip(RP_POD)}:${RP_PORTS.h1Same}/`;
    for (const t0 = Date.now(); Date.now() - t0 < 15_000; await new Promise((r) => setTimeout(r, 200))) {
      try {
        this.exec('plain/client', ['curl', '-sS', '-f', '-o', '/dev/null', '-m', '2', url], 0);
        return;
      } catch {
        // not listening yet
      }
    }
    throw new Error(`the reverse proxy in ${RP_POD} never answered ${url} (its log: nodemesh sim logs)`);
  }

  url(p: L7Path, h2: boolean): string {
    const host = 'vip' in p.target ? p.target.vip : this.ip(p.target.pod);
    return `http://${host}:${h2 ? p.h2Port : p.h1Port}/`;
  }

  /** The processes that carry a path: its agents, or nginx's master and workers. */
  proxyPids(p: L7Path): number[] {
    if (p.proxies !== 'nginx') return p.proxies.map((n) => this.agentPid(n));
    const master = Number(readFileSync(join(this.dir, 'nginx-rproxy.pid'), 'utf8').trim());
    const children = readFileSync(`/proc/${master}/task/${master}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
    return [master, ...children];
  }

  /** Throws when one of the path's agents has died (its log says why): nothing after would measure it. */
  assertAlive(p: L7Path): void {
    if (p.proxies === 'nginx') return;
    for (const n of p.proxies) {
      try {
        process.kill(this.agentPid(n), 0);
      } catch {
        throw new Error(`${p.label}: the agent of ${n} died (pid ${this.agentPid(n)}); its log: ${join(this.#node(n).agentStateDir, 'agent', 'agent.log')}`);
      }
    }
  }

  /** Proxy CPU ms per 1,000 requests over `fn`, which answers how many requests it made. */
  #cpu<T>(p: L7Path, fn: () => T, count: (r: T) => number): { r: T; cpu: number } {
    const pids = this.proxyPids(p);
    const c0 = pids.reduce((a, pid) => a + cpuSeconds(pid), 0);
    const r = fn();
    const used = pids.reduce((a, pid) => a + cpuSeconds(pid), 0) - c0;
    return { r, cpu: pids.length ? (used * 1000) / (count(r) / 1000) : NaN };
  }

  wrkH1(p: L7Path, seconds = this.seconds): WrkResult {
    return parseWrk(this.exec(p.client, ['wrk', '-t', '1', '-c', '16', '-d', `${seconds}s`, this.url(p, false)]));
  }

  sampleH1(p: L7Path): { r: WrkResult; cpu: number } {
    return this.#cpu(p, () => this.wrkH1(p), (r) => r.requests);
  }

  sampleH2(p: L7Path): { r: H2loadResult; cpu: number } {
    return this.#cpu(p, () => parseH2load(this.exec(p.client, h2loadThroughputArgs(this.url(p, true), 16, 10, this.seconds))), (r) => r.succeeded);
  }

  latency(p: L7Path, rate: number): LatencyResult {
    const log = join(this.dir, `h2load-${p.name}.log`);
    const out = this.exec(p.client, h2loadRateArgs(this.url(p, false), 16, rate, this.seconds, log));
    const lat = parseH2loadLog(readFileSync(log, 'utf8'));
    const sum = parseH2load(out);
    return { ...lat, failed: Math.max(lat.failed, sum.errors) };
  }

  #node(name: string): SimNodeInfo {
    const n = multiNodeNodes(this.sd).find((x) => x.name === name);
    if (!n?.netnsPath) throw new Error(`no node ${name}`);
    return n;
  }

  /** Sum of istio_requests_total over a node's agent: it grows only when the agent serves HTTP at L7. */
  async l7Requests(node: string): Promise<number> {
    const r = await curlIn(this.#node(node).netnsPath!, 'http://127.0.0.1:15020/metrics');
    if (r.code !== 0) throw new Error(`${node}'s agent's metrics did not answer (curl exit ${r.code})`);
    return r.body.split('\n').filter((l) => l.startsWith('istio_requests_total{')).reduce((a, l) => a + Number(l.slice(l.lastIndexOf(' ') + 1)), 0);
  }
}
