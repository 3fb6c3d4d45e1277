// ServiceAccount tokens the kubelet role hands its pods, as kubelet's projected volumes do:
// each one asked of the TokenRequest API for the pod's ServiceAccount, bound to the pod, written
// (0600, atomically) where the pod's processes read it, and asked for again once 80% of its
// lifetime has passed. Every pod gets its ServiceAccount's token for the API (kubelet's
// kube-api-access volume: token, ca.crt, namespace) unless automountServiceAccountToken is
// false; every projected serviceAccountToken source gets its own (the agents' token for
// audience nodemesh is one).
import { join } from 'node:path';
import { ConfigError } from '../errors.js';
import { writeFileAtomic } from '../files.js';
import { statusOf, type KubeApi } from '../kube/index.js';

/** Where a pod's processes find its ServiceAccount files (there is no mount namespace to put them at /var/run/secrets). */
export const SERVICEACCOUNT_DIR_ENV = 'NODEMESH_SERVICEACCOUNT_DIR';
/** kubelet's lifetime for the kube-api-access token (an hour and a few seconds, so it is told apart). */
const API_TOKEN_SECONDS = 3607;
/** A projected serviceAccountToken's default lifetime, as the API defaults it. */
const PROJECTED_TOKEN_SECONDS = 3600;

type Raw = Record<string, unknown>;
const rec = (v: unknown): Raw => (v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as Raw) : {});

/** One token file of a pod. */
export interface TokenVolume {
  file: string;
  /** undefined: the API server's own audience. */
  audience?: string;
  expirationSeconds: number;
}

/** The pod's ServiceAccount files: `<pod dir>/serviceaccount/{token,ca.crt,namespace}`. */
export function serviceAccountDir(podDir: string): string {
  return join(podDir, 'serviceaccount');
}

/** A projected volume's file: `<pod dir>/volumes/<volume>/<path>`. */
export function projectedFile(podDir: string, volume: string, path: string): string {
  return join(podDir, 'volumes', volume, path);
}

/** The token files a pod gets, from its spec (volume and path names are the API's to have checked). */
export function tokenVolumes(raw: Raw, podDir: string): TokenVolume[] {
  const spec = rec(raw.spec);
  const out: TokenVolume[] = [];
  if (spec.automountServiceAccountToken !== false) out.push({ file: join(serviceAccountDir(podDir), 'token'), expirationSeconds: API_TOKEN_SECONDS });
  for (const v of Array.isArray(spec.volumes) ? spec.volumes.map(rec) : []) {
    const sources = rec(v.projected).sources;
    for (const s of Array.isArray(sources) ? sources.map(rec) : []) {
      const t = rec(s.serviceAccountToken);
      if (typeof v.name !== 'string' || typeof t.path !== 'string' || /(^|\/)\.\.(\/|$)/.test(t.path) || t.path.startsWith('/')) continue;
      out.push({
        file: projectedFile(podDir, v.name, t.path),
        ...(typeof t.audience === 'string' && t.audience ? { audience: t.audience } : {}),
        expirationSeconds: typeof t.expirationSeconds === 'number' && t.expirationSeconds >= 600 ? t.expirationSeconds : PROJECTED_TOKEN_SECONDS,
      });
    }
  }
  return out;
}

/** Asks the TokenRequest API for a token of the pod's ServiceAccount, bound to the pod; returns it and its expiry (ms). */
export async function requestPodToken(api: KubeApi, pod: { namespace: string; name: string; uid: string; serviceAccount: string }, v: Omit<TokenVolume, 'file'>): Promise<{ token: string; expiresAt: number }> {
  const path = `/api/v1/namespaces/${encodeURIComponent(pod.namespace)}/serviceaccounts/${encodeURIComponent(pod.serviceAccount)}/token`;
  const body = {
    apiVersion: 'authentication.k8s.io/v1',
    kind: 'TokenRequest',
    spec: { audiences: v.audience ? [v.audience] : [], expirationSeconds: v.expirationSeconds, boundObjectRef: { kind: 'Pod', apiVersion: 'v1', name: pod.name, uid: pod.uid } },
  };
  let r: Raw;
  try {
    r = rec(await api.request('POST', path, body, 'application/json', 10_000));
  } catch (err) {
    const why = statusOf(err) === 404 ? `ServiceAccount ${pod.namespace}/${pod.serviceAccount} (or the pod) does not exist` : (err as Error).message;
    throw new ConfigError('NM_ERR_KUBE_API', `cannot get pod ${pod.namespace}/${pod.name} a ServiceAccount token: ${why}`, { status: statusOf(err), cause: err });
  }
  const status = rec(r.status);
  const token = status.token;
  const exp = Date.parse(String(status.expirationTimestamp));
  if (typeof token !== 'string' || token === '') throw new ConfigError('NM_ERR_KUBE_API', `the TokenRequest for pod ${pod.namespace}/${pod.name} answered without a token`);
  return { token, expiresAt: Number.isFinite(exp) ? exp : Date.now() + v.expirationSeconds * 1000 };
}

interface Held {
  refreshAt: number;
}

/** Keeps every pod's token files written and fresh. */
export class TokenKeeper {
  readonly #api: KubeApi;
  readonly #caPem: string | undefined;
  readonly #now: () => number;
  /** By pod uid, then file. */
  readonly #held = new Map<string, Map<string, Held>>();

  /** `caPem`: the API's CA as the kubeconfig has it, written as the pod's ca.crt. */
  constructor(api: KubeApi, caPem: string | undefined, now: () => number = Date.now) {
    this.#api = api;
    this.#caPem = caPem;
    this.#now = now;
  }

  /** Writes the pod's token files that are missing or due (80% of their lifetime gone). Throws when one cannot be had. */
  async ensure(raw: Raw, podDir: string): Promise<void> {
    const m = rec(raw.metadata);
    const pod = { namespace: String(m.namespace), name: String(m.name), uid: String(m.uid), serviceAccount: String(rec(raw.spec).serviceAccountName ?? 'default') };
    let held = this.#held.get(pod.uid);
    if (!held) this.#held.set(pod.uid, (held = new Map()));
    for (const v of tokenVolumes(raw, podDir)) {
      const h = held.get(v.file);
      const now = this.#now();
      if (h && h.refreshAt > now) continue;
      const { token, expiresAt } = await requestPodToken(this.#api, pod, v);
      writeFileAtomic(v.file, token, { mode: 0o600 });
      if (v.file === join(serviceAccountDir(podDir), 'token')) {
        writeFileAtomic(join(serviceAccountDir(podDir), 'namespace'), pod.namespace, { mode: 0o644 });
        if (this.#caPem) writeFileAtomic(join(serviceAccountDir(podDir), 'ca.crt'), this.#caPem, { mode: 0o644 });
      }
      held.set(v.file, { refreshAt: now + 0.8 * Math.max(0, expiresAt - now) });
    }
  }

  forget(uid: string): void {
    this.#held.delete(uid);
  }
}
