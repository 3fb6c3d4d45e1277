// Node identity on Kubernetes: an agent presents its pod's projected ServiceAccount token
// (audience `nodemesh`); the control plane checks it with a TokenReview, requires the agents'
// ServiceAccount, and takes the node from the pod the token is bound to. Positive results are
// cached briefly (bounded, by token hash, never past the token's exp); while the API cannot be
// asked, tokens not cached are refused (fail closed).
import { createHash } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import { UsageError } from '../errors.js';
import type { Logger } from '../log.js';
import { parseCidr, type Cidr } from '../net/index.js';
import { bearerToken, grpcError, sameSecret } from './auth.js';
import { statusOf, type KubeApi } from '../kube/index.js';
import { NODE_TOKEN_PREFIX, nodeNameProblem, type NodeCaller } from './node-credentials.js';

/** The audience of the agents' projected tokens: a token for the API server itself is refused. */
export const AGENT_TOKEN_AUDIENCE = 'nodemesh';
/** The ServiceAccount the agent DaemonSet runs as (`--agent-service-account`). */
export const DEFAULT_AGENT_SERVICE_ACCOUNT = 'nodemesh-system/nodemesh-agent';
/** How long a TokenReview's yes is reused (the kube-apiserver webhook token cache's default, 2 min). */
export const DEFAULT_REVIEW_CACHE_MS = 120_000;
const DEFAULT_CACHE_MAX = 4096;
const REVIEW_TIMEOUT_MS = 10_000;

const EXTRA = 'authentication.kubernetes.io/';
const SA_USER = /^system:serviceaccount:([^:]+):([^:]+)$/;

export interface ServiceAccountRef {
  namespace: string;
  name: string;
}

export interface KubeNodeAuthOptions {
  api: KubeApi;
  /** The control plane's admin token: it proves no node, and is never sent to the API. */
  adminToken: string;
  /** `namespace/name` of the agents' ServiceAccount; default nodemesh-system/nodemesh-agent. */
  agentServiceAccount?: string;
  /** Default `nodemesh`. */
  audience?: string;
  /** How long a positive review is reused, at most until the token's exp (default 2 min). */
  cacheMs?: number;
  /** Most tokens remembered (default 4096); the oldest is forgotten first. */
  cacheMax?: number;
  log: Logger;
  /** The clock (tests). */
  now?: () => number;
}

/** Parses `namespace/name`; throws UsageError naming `what`. */
export function parseServiceAccount(s: string, what: string): ServiceAccountRef {
  const m = /^([a-z0-9]([-a-z0-9]*[a-z0-9])?)\/([a-z0-9]([-a-z0-9.]*[a-z0-9])?)$/.exec(s);
  if (!m) throw new UsageError(`${what} must be <namespace>/<serviceaccount>, e.g. ${DEFAULT_AGENT_SERVICE_ACCOUNT}; got ${JSON.stringify(s)}`);
  return { namespace: m[1]!, name: m[3]! };
}

interface Cached {
  caller: NodeCaller;
  until: number;
}

type Rec = Record<string, unknown>;
const rec = (v: unknown): Rec => (v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as Rec) : {});
const unauthenticated = (why: string): grpc.ServiceError => grpcError(grpc.status.UNAUTHENTICATED, why);

/** The exp claim of a JWT, in ms; undefined when it has none. Read only after the API vouched for the token. */
function expiryMs(token: string): number | undefined {
  try {
    const exp = rec(JSON.parse(Buffer.from(token.split('.')[1] ?? '', 'base64url').toString('utf8'))).exp;
    return typeof exp === 'number' && Number.isFinite(exp) ? exp * 1000 : undefined;
  } catch {
    return undefined;
  }
}

/** The first string of a TokenReview user.extra key. */
function extra(user: Rec, key: string): string | undefined {
  const v = rec(user.extra)[EXTRA + key];
  return Array.isArray(v) && typeof v[0] === 'string' && v[0] !== '' ? v[0] : undefined;
}

export class KubeNodeAuthenticator {
  readonly agentServiceAccount: ServiceAccountRef;
  readonly audience: string;
  readonly #o: KubeNodeAuthOptions;
  readonly #cacheMs: number;
  readonly #cacheMax: number;
  readonly #now: () => number;
  /** By sha256 of the token, oldest first. */
  readonly #cache = new Map<string, Cached>();
  readonly #inflight = new Map<string, Promise<NodeCaller>>();
  /** Nodes whose pod CIDRs could not be read, so each is logged once. */
  readonly #noCidrs = new Set<string>();
  #reviews = 0;

  constructor(o: KubeNodeAuthOptions) {
    this.#o = o;
    this.agentServiceAccount = parseServiceAccount(o.agentServiceAccount ?? DEFAULT_AGENT_SERVICE_ACCOUNT, '--agent-service-account');
    this.audience = o.audience ?? AGENT_TOKEN_AUDIENCE;
    this.#cacheMs = o.cacheMs ?? DEFAULT_REVIEW_CACHE_MS;
    this.#cacheMax = o.cacheMax ?? DEFAULT_CACHE_MAX;
    this.#now = o.now ?? Date.now;
  }

  /** TokenReviews sent so far. */
  get reviews(): number {
    return this.#reviews;
  }

  /** Tokens remembered now. */
  get cached(): number {
    return this.#cache.size;
  }

  /** The Authenticator of node-auth.ts: the node the call's ServiceAccount token proves. */
  readonly authenticate = async (md: grpc.Metadata): Promise<NodeCaller> => {
    const token = bearerToken(md.get('authorization')[0]);
    const sa = `${this.agentServiceAccount.namespace}/${this.agentServiceAccount.name}`;
    if (!token) throw unauthenticated(`missing "authorization: Bearer <token>" metadata; give the agent its pod's projected ServiceAccount token (audience ${this.audience}) with --token-file`);
    // Refused here, never sent to the API: neither is a ServiceAccount token.
    if (sameSecret(token, this.#o.adminToken)) throw unauthenticated('the control plane\'s admin token proves no node; give the agent its pod\'s ServiceAccount token');
    if (token.startsWith(`${NODE_TOKEN_PREFIX}.`)) {
      throw unauthenticated(`a node token (nodemesh control-plane node-token) is for the directory mode; this control plane reads the Kubernetes API and takes only the agent pod's projected ServiceAccount token (audience ${this.audience}, ServiceAccount ${sa})`);
    }
    if (token.split('.').length !== 3) throw unauthenticated(`the credential is not a ServiceAccount token (a JWT); mount a projected token with audience ${this.audience} and give its path to --token-file`);
    const key = createHash('sha256').update(token).digest('base64url');
    const hit = this.#cache.get(key);
    if (hit && hit.until > this.#now()) return hit.caller;
    if (hit) this.#cache.delete(key);
    // One review for the calls an agent makes at once (its xDS stream, CA and status calls).
    let pending = this.#inflight.get(key);
    if (!pending) {
      pending = this.#check(token).finally(() => this.#inflight.delete(key));
      this.#inflight.set(key, pending);
      pending.then((caller) => this.#remember(key, token, caller), () => undefined);
    }
    return pending;
  };

  #remember(key: string, token: string, caller: NodeCaller): void {
    const now = this.#now();
    const until = Math.min(now + this.#cacheMs, expiryMs(token) ?? now);
    if (until <= now) return;
    this.#cache.delete(key);
    this.#cache.set(key, { caller, until });
    if (this.#cache.size <= this.#cacheMax) return;
    for (const [k, c] of this.#cache) if (c.until <= now) this.#cache.delete(k);
    for (const k of this.#cache.keys()) {
      if (this.#cache.size <= this.#cacheMax) break;
      this.#cache.delete(k);
    }
  }

  /** An API failure as the agent sees it: UNAVAILABLE (it retries), saying new agents are held out meanwhile. */
  #unavailable(what: string, err: unknown): grpc.ServiceError {
    const status = statusOf(err);
    const rbac = status === 401 || status === 403 ? '; the control plane\'s ServiceAccount needs create on tokenreviews.authentication.k8s.io (ClusterRole system:auth-delegator) and get on pods and nodes' : '';
    const why = `cannot check the agent's ServiceAccount token: ${what} at ${this.#o.api.server} failed (${(err as Error).message})${rbac}; agents not checked in the last ${Math.round(this.#cacheMs / 1000)}s are refused until the Kubernetes API answers`;
    return grpcError(grpc.status.UNAVAILABLE, why);
  }

  async #check(token: string): Promise<NodeCaller> {
    this.#reviews++;
    let review: unknown;
    try {
      review = await this.#o.api.request(
        'POST',
        '/apis/authentication.k8s.io/v1/tokenreviews',
        { apiVersion: 'authentication.k8s.io/v1', kind: 'TokenReview', spec: { token, audiences: [this.audience] } },
        'application/json',
        REVIEW_TIMEOUT_MS,
      );
    } catch (err) {
      throw this.#unavailable('the TokenReview', err);
    }
    const status = rec(rec(review).status);
    if (status.authenticated !== true) {
      const why = typeof status.error === 'string' && status.error ? status.error : 'not authenticated';
      throw unauthenticated(`the Kubernetes API refused the agent's ServiceAccount token (audience ${this.audience}): ${why}`);
    }
    // An API that could not take the audience into account answers with the ones it checked.
    if (Array.isArray(status.audiences) && !status.audiences.includes(this.audience)) {
      throw unauthenticated(`the agent's token is not for audience ${this.audience} (the API accepted it for ${JSON.stringify(status.audiences)})`);
    }
    const user = rec(status.user);
    const m = SA_USER.exec(typeof user.username === 'string' ? user.username : '');
    const want = this.agentServiceAccount;
    if (!m) throw unauthenticated(`the token is ${JSON.stringify(user.username)}'s, not a ServiceAccount's`);
    if (m[1] !== want.namespace || m[2] !== want.name) {
      throw unauthenticated(`the token is ServiceAccount ${m[1]}/${m[2]}'s, not the agents' (${want.namespace}/${want.name}, --agent-service-account): it proves no node`);
    }
    const podName = extra(user, 'pod-name');
    const podUid = extra(user, 'pod-uid');
    if (!podName || !podUid) {
      throw unauthenticated(`the agent's token is not bound to a pod, so it proves no node; use the projected serviceAccountToken volume (audience ${this.audience}) that kubelet binds to the agent's pod`);
    }
    const agentPod = `${want.namespace}/${podName}`;
    // Kubernetes 1.30+ names the node in the review; older servers are asked for the pod.
    const node = extra(user, 'node-name') ?? (await this.#nodeOfPod(want.namespace, podName, podUid));
    const bad = nodeNameProblem(node);
    if (bad) throw unauthenticated(`the agent's pod ${agentPod} runs on a node the mesh cannot name: ${bad}`);
    const caller: NodeCaller = { node, podCidrs: await this.#podCidrs(node), agentPod };
    this.#o.log.debug({ node, agentPod }, 'agent authenticated by its ServiceAccount token');
    return caller;
  }

  async #nodeOfPod(ns: string, name: string, uid: string): Promise<string> {
    let pod: Rec;
    try {
      pod = rec(await this.#o.api.request('GET', `/api/v1/namespaces/${encodeURIComponent(ns)}/pods/${encodeURIComponent(name)}`, undefined, undefined, REVIEW_TIMEOUT_MS));
    } catch (err) {
      if (statusOf(err) === 404) throw unauthenticated(`the agent's token is bound to pod ${ns}/${name}, which no longer exists`);
      throw this.#unavailable(`reading the agent's pod ${ns}/${name}`, err);
    }
    if (rec(pod.metadata).uid !== uid) throw unauthenticated(`the agent's token is bound to pod ${ns}/${name} uid ${uid}, which no longer exists (that name has uid ${String(rec(pod.metadata).uid)} now)`);
    const node = rec(pod.spec).nodeName;
    if (typeof node !== 'string' || !node) throw unauthenticated(`the agent's pod ${ns}/${name} is not scheduled to a node yet`);
    return node;
  }

  /**
   * The node's pod CIDRs (spec.podCIDRs, else spec.podCIDR). A Node that cannot be read (absent,
   * RBAC) or names none gives none: the node's reports are then believed only for IPs the API
   * itself gives its pods (placement.ts). An API failure refuses, so as not to cache that.
   */
  async #podCidrs(node: string): Promise<Cidr[]> {
    let spec: Rec;
    try {
      spec = rec(rec(await this.#o.api.request('GET', `/api/v1/nodes/${encodeURIComponent(node)}`, undefined, undefined, REVIEW_TIMEOUT_MS)).spec);
    } catch (err) {
      const status = statusOf(err);
      if (status === 0 || status >= 500) throw this.#unavailable(`reading node ${node}`, err);
      this.#noCidrsOnce(node, (err as Error).message);
      return [];
    }
    const listed = Array.isArray(spec.podCIDRs) ? spec.podCIDRs : typeof spec.podCIDR === 'string' ? [spec.podCIDR] : [];
    const cidrs: Cidr[] = [];
    for (const c of listed) {
      try {
        if (typeof c === 'string') cidrs.push(parseCidr(c));
      } catch {
        // A malformed range gives nothing: fewer reported IPs believed, never more.
      }
    }
    if (cidrs.length === 0) this.#noCidrsOnce(node, 'the Node names no spec.podCIDR');
    else this.#noCidrs.delete(node);
    return cidrs;
  }

  #noCidrsOnce(node: string, why: string): void {
    if (this.#noCidrs.has(node)) return;
    this.#noCidrs.add(node);
    this.#o.log.warn({ node, reason: why }, "no pod CIDR known for this node: its agent's reports are taken only with the IPs the API gives their pods (status.podIP)");
  }
}
