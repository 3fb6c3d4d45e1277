// The Kubernetes API as the cluster network reaches it. In multi-node mode the control plane
// runs in a network namespace that cannot reach the host's 127.0.0.1, where the API server
// may well be. So `up` offers it there: a listener made inside the cluster netns (the addon's
// listenInNetns, on 10.240.0.254:6443), each connection forwarded from the host side to the
// kubeconfig's server and nowhere else. TLS passes through untouched: the namespaced processes
// get a kubeconfig pointing at the relay with `tls-server-name` set to the server's own name,
// so the server's certificate still verifies end to end and the credentials stay as they were.
import { createServer, connect, type Server, type Socket } from 'node:net';
import { readFileSync } from 'node:fs';
import { dirname, isAbsolute, resolve } from 'node:path';
import { parse, stringify } from 'yaml';
import { UsageError } from '../errors.js';
import type { Logger } from '../log.js';
import { isIPv4, PORTS } from '../net/index.js';
import { listenInNetns } from '../redirect/index.js';
import { CLUSTER_SERVICE_IP } from '../sim/index.js';

/** Connections relayed at once; more are refused (the control plane needs a handful). */
const MAX_CONNECTIONS = 256;

export interface HostPort {
  host: string;
  port: number;
}

/** Where the cluster network reaches the API in multi-node mode: the relay, 10.240.0.254:6443. */
export const CLUSTER_KUBE_API: HostPort = { host: CLUSTER_SERVICE_IP, port: PORTS.kubeApi };

/** Where a kubeconfig's server URL points: host and port (443 for https, 80 for http, when absent). */
export function serverTarget(server: string): HostPort {
  let u: URL;
  try {
    u = new URL(server);
  } catch {
    throw new UsageError(`the kubeconfig's server ${JSON.stringify(server)} is not a URL`);
  }
  if (u.protocol !== 'https:' && u.protocol !== 'http:') throw new UsageError(`the kubeconfig's server ${server} is not http(s)`);
  const host = u.hostname.replace(/^\[(.*)\]$/, '$1');
  return { host, port: u.port ? Number(u.port) : u.protocol === 'https:' ? 443 : 80 };
}

type Rec = Record<string, unknown>;
const rec = (v: unknown): Rec => (v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as Rec) : {});
const named = (list: unknown, name: unknown): Rec | undefined => (Array.isArray(list) ? list.map(rec).find((e) => e.name === name) : undefined);

/**
 * The kubeconfig `file` with its current context's server moved to `relay` (`host:port`), for
 * processes that reach the API through the relay: only that context, its cluster and its user;
 * `tls-server-name` set to the original host (unless it names one), so the certificate is
 * checked against the name it was issued for; relative file paths made absolute.
 */
export function rewriteKubeconfig(file: string, relay: string): { text: string; tlsServerName: string } {
  const doc = rec(parse(readFileSync(file, 'utf8')));
  const ctxName = doc['current-context'];
  const ctx = rec(named(doc.contexts, ctxName)?.context);
  const clusterEntry = named(doc.clusters, ctx.cluster);
  const userEntry = named(doc.users, ctx.user);
  if (!clusterEntry) throw new UsageError(`kubeconfig ${file} has no cluster for its current context ${JSON.stringify(ctxName)}`);
  const base = dirname(resolve(file));
  const abs = (v: unknown): unknown => (typeof v === 'string' && v !== '' && !isAbsolute(v) ? resolve(base, v) : v);
  const cluster = { ...rec(clusterEntry.cluster) };
  const server = String(cluster.server ?? '');
  const tlsServerName = typeof cluster['tls-server-name'] === 'string' && cluster['tls-server-name'] ? cluster['tls-server-name'] : serverTarget(server).host;
  cluster.server = `${new URL(server).protocol}//${relay}`;
  cluster['tls-server-name'] = tlsServerName;
  if (cluster['certificate-authority'] !== undefined) cluster['certificate-authority'] = abs(cluster['certificate-authority']);
  const user = { ...rec(userEntry?.user) };
  for (const k of ['client-certificate', 'client-key', 'tokenFile']) if (user[k] !== undefined) user[k] = abs(user[k]);
  const out = {
    apiVersion: 'v1',
    kind: 'Config',
    'current-context': ctxName,
    clusters: [{ name: clusterEntry.name, cluster }],
    users: userEntry ? [{ name: userEntry.name, user }] : [],
    contexts: [{ name: ctxName, context: ctx }],
  };
  return { text: stringify(out), tlsServerName };
}

/**
 * The environment for a process given the rewritten kubeconfig: Node warns once (DEP0123) when
 * the TLS server name is an IP address, which is what checks the certificate's IP SAN here.
 */
export function relayClientEnv(tlsServerName: string, env: NodeJS.ProcessEnv = process.env): NodeJS.ProcessEnv {
  if (!isIPv4(tlsServerName) && !tlsServerName.includes(':')) return env;
  return { ...env, NODE_OPTIONS: `${env.NODE_OPTIONS ?? ''} --disable-warning=DEP0123`.trim() };
}

/** A running relay: a listener inside a netns, forwarding from the host side to one target. */
export class ApiRelay {
  readonly #server: Server;
  readonly #open = new Set<Socket>();
  #active = 0;
  #relayed = 0;

  private constructor(server: Server) {
    this.#server = server;
  }

  /** Connections relayed since start. */
  get relayed(): number {
    return this.#relayed;
  }

  /** Listens on `listen` inside the netns at `netnsPath` and forwards every connection to `target`. */
  static async start(netnsPath: string, listen: HostPort, target: HostPort, log: Logger): Promise<ApiRelay> {
    const fd = await listenInNetns(netnsPath, { host: listen.host, port: listen.port });
    const l = log.child({ component: 'api-relay' });
    let relay: ApiRelay | undefined;
    const server = createServer({ noDelay: true }, (client) => relay!.#relay(client, target, l));
    relay = new ApiRelay(server);
    await new Promise<void>((res, rej) => {
      server.once('error', rej);
      server.listen({ fd }, () => {
        server.off('error', rej);
        res();
      });
    });
    server.on('error', (err) => l.error({ err }, 'the relay listener failed'));
    l.info({ netns: netnsPath, listen: `${listen.host}:${listen.port}`, target: `${target.host}:${target.port}` }, 'relaying the Kubernetes API into the cluster network');
    return relay;
  }

  #relay(client: Socket, target: HostPort, log: Logger): void {
    if (this.#active >= MAX_CONNECTIONS) {
      log.warn({ max: MAX_CONNECTIONS }, 'too many relayed connections; refusing one');
      client.resetAndDestroy();
      return;
    }
    this.#active++;
    this.#relayed++;
    client.once('close', () => this.#active--);
    const upstream = connect({ host: target.host, port: target.port, noDelay: true });
    for (const s of [client, upstream]) {
      this.#open.add(s);
      s.on('close', () => this.#open.delete(s));
    }
    // A failure on either side ends both with a reset, so the client sees the API as gone (it
    // retries) and never as a clean, empty answer.
    const fail = (err: Error): void => {
      log.debug({ err: err.message }, 'relayed connection failed');
      if (!client.destroyed) client.resetAndDestroy();
      if (!upstream.destroyed) upstream.resetAndDestroy();
    };
    client.on('error', fail);
    upstream.on('error', fail);
    client.pipe(upstream);
    upstream.pipe(client);
  }

  /** Stops listening and cuts every relayed connection. */
  async close(): Promise<void> {
    const closed = new Promise<void>((res) => this.#server.close(() => res()));
    for (const s of this.#open) s.destroy();
    await closed;
  }
}
