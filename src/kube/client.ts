// A connection to the Kubernetes API, shared by the control plane and the agent: the kubeconfig
// (a file, or the pod's in-cluster service account), plain JSON requests authenticated the way
// @kubernetes/client-node does it, and discovery of which group/versions the server serves.
import { existsSync } from 'node:fs';
import { request as httpRequest, type RequestOptions } from 'node:http';
import { createHash } from 'node:crypto';
import { Agent as HttpsAgent, request as httpsRequest, type AgentOptions as HttpsAgentOptions } from 'node:https';
import type { KubeConfig } from '@kubernetes/client-node';
import { kubeLib } from './lib.js';
import { ConfigError, UsageError } from '../errors.js';

export interface KubeConnectOptions {
  /** A kubeconfig file; its current context is used. */
  kubeconfig?: string;
  /** The pod's service account (KUBERNETES_SERVICE_HOST and the mounted token and CA). */
  inCluster?: boolean;
}

export function loadKubeConfig(opts: KubeConnectOptions): KubeConfig {
  const kc = new (kubeLib().KubeConfig)();
  try {
    if (opts.kubeconfig) kc.loadFromFile(opts.kubeconfig);
    else if (opts.inCluster) kc.loadFromCluster();
    else throw new UsageError('the Kubernetes API needs --kubeconfig <file> or --in-cluster');
  } catch (err) {
    if (err instanceof UsageError) throw err;
    throw new UsageError(`cannot load ${opts.kubeconfig ? `kubeconfig ${opts.kubeconfig}` : 'the in-cluster config'}: ${(err as Error).message}`, { cause: err });
  }
  if (!kc.getCurrentCluster()) throw new UsageError(`kubeconfig ${opts.kubeconfig ?? '(in-cluster)'} has no current cluster`);
  if (!opts.kubeconfig) {
    // The client reads these lazily, at the first request; say now what is missing instead.
    if (!process.env.KUBERNETES_SERVICE_HOST || !process.env.KUBERNETES_SERVICE_PORT) {
      throw new UsageError('--in-cluster needs KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT (every pod has them); outside a pod use --kubeconfig <file>');
    }
    const files = [kc.getCurrentUser()?.authProvider?.config?.tokenFile as string | undefined, kc.getCurrentCluster()?.caFile];
    for (const f of files) {
      if (f && !existsSync(f)) throw new UsageError(`--in-cluster: ${f} does not exist; mount the pod's service account token (automountServiceAccountToken) or use --kubeconfig <file>`);
    }
  }
  return kc;
}

/** An API failure: `status` is the HTTP status, 0 when the server could not be reached. */
export type KubeApiError = ConfigError & { statusCode: number };

export function kubeApiError(status: number, message: string, path: string, cause?: unknown): KubeApiError {
  const err = new ConfigError('NM_ERR_KUBE_API', message, { status, path, ...(cause ? { cause } : {}) });
  // The client's ListWatch reads `statusCode` (410 Gone means relist).
  return Object.assign(err, { statusCode: status });
}

export function statusOf(err: unknown): number {
  return typeof (err as { statusCode?: unknown })?.statusCode === 'number' ? (err as { statusCode: number }).statusCode : 0;
}

const REQUEST_TIMEOUT_MS = 30_000;

/** JSON requests to one API server. Raw JSON throughout, like the watch stream, so list and watch agree. */
export class KubeApi {
  readonly kc: KubeConfig;
  readonly server: string;

  /** One keep-alive agent per TLS identity (a rotated client certificate or CA gets a new one). */
  #agent: { key: string; agent: HttpsAgent } | undefined;

  constructor(kc: KubeConfig) {
    this.kc = kc;
    this.server = kc.getCurrentCluster()!.server.replace(/\/+$/, '');
  }

  /**
   * The client library gives every request an agent of its own, so each would pay a TCP and TLS
   * handshake; requests share one keep-alive agent with the same TLS options instead. A cluster
   * reached through a proxy keeps the library's agent (it speaks to the proxy).
   */
  #keepAlive(opts: RequestOptions & Pick<HttpsAgentOptions, 'ca' | 'cert' | 'key' | 'pfx' | 'passphrase' | 'servername' | 'rejectUnauthorized'>): void {
    if (this.kc.getCurrentCluster()?.proxyUrl) return;
    const tls = [opts.ca, opts.cert, opts.key, opts.pfx, opts.passphrase, opts.servername, opts.rejectUnauthorized];
    const key = createHash('sha256').update(JSON.stringify(tls)).digest('hex');
    if (this.#agent?.key !== key) {
      this.#agent?.agent.destroy();
      this.#agent = { key, agent: new HttpsAgent({ keepAlive: true, maxSockets: 16, ca: opts.ca, cert: opts.cert, key: opts.key, pfx: opts.pfx, passphrase: opts.passphrase, servername: opts.servername, ...(opts.rejectUnauthorized !== undefined ? { rejectUnauthorized: opts.rejectUnauthorized } : {}) }) };
    }
    opts.agent = this.#agent.agent;
  }

  /** Closes the idle keep-alive connections (they hold no reference on the event loop meanwhile). */
  close(): void {
    this.#agent?.agent.destroy();
    this.#agent = undefined;
  }

  async request(method: 'GET' | 'PATCH' | 'POST' | 'DELETE', path: string, body?: unknown, contentType = 'application/merge-patch+json', timeoutMs = REQUEST_TIMEOUT_MS): Promise<unknown> {
    const url = new URL(this.server + path);
    const opts: RequestOptions & { headers: Record<string, string> } = { method, headers: { accept: 'application/json' } };
    await this.kc.applyToHTTPSOptions(opts as never);
    if (url.protocol === 'https:') this.#keepAlive(opts);
    const payload = body === undefined ? undefined : JSON.stringify(body);
    if (payload !== undefined) Object.assign(opts.headers, { 'content-type': contentType, 'content-length': String(Buffer.byteLength(payload)) });
    const send = url.protocol === 'http:' ? httpRequest : httpsRequest;
    return new Promise((resolve, reject) => {
      const req = send(url, opts, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('error', (err) => reject(kubeApiError(0, `${method} ${path}: ${err.message}`, path, err)));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          const status = res.statusCode ?? 0;
          let json: unknown;
          try {
            json = text ? JSON.parse(text) : {};
          } catch {
            json = undefined;
          }
          if (status >= 200 && status < 300 && json !== undefined) return resolve(json);
          const why = (json as { message?: unknown } | undefined)?.message;
          reject(kubeApiError(status, `${method} ${path}: HTTP ${status}${typeof why === 'string' ? `: ${why}` : ''}`, path));
        });
      });
      req.setTimeout(timeoutMs, () => req.destroy(new Error(`no answer in ${timeoutMs / 1000}s`)));
      req.on('error', (err) => reject(kubeApiError(0, `${method} ${path}: ${err.message}`, path, err)));
      req.end(payload);
    });
  }

  get(path: string): Promise<unknown> {
    return this.request('GET', path);
  }

  /** The group/versions the server serves, as `group/version` (`v1` for the core group). */
  async servedGroupVersions(): Promise<Set<string>> {
    const out = new Set<string>();
    const core = (await this.get('/api')) as { versions?: unknown };
    for (const v of Array.isArray(core.versions) ? core.versions : []) if (typeof v === 'string') out.add(v);
    const groups = (await this.get('/apis')) as { groups?: { versions?: { groupVersion?: unknown }[] }[] };
    for (const g of Array.isArray(groups.groups) ? groups.groups : []) {
      for (const v of Array.isArray(g.versions) ? g.versions : []) if (typeof v.groupVersion === 'string') out.add(v.groupVersion);
    }
    return out;
  }

  /** The resource names (plurals) a group/version serves. */
  async resourcesOf(groupVersion: string): Promise<Set<string>> {
    const r = (await this.get(groupVersion === 'v1' ? '/api/v1' : `/apis/${groupVersion}`)) as { resources?: { name?: unknown }[] };
    return new Set((Array.isArray(r.resources) ? r.resources : []).map((x) => x.name).filter((n): n is string => typeof n === 'string'));
  }
}
