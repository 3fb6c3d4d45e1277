// ServiceAccount tokens as kube-apiserver issues and checks them: TokenRequest (a JWT signed
// RS256 by the stand-in's key, with the kubernetes.io claims of a bound pod and its node) and
// TokenReview (audience, expiry with go-jose's 60 s leeway, and the bound objects still existing).
import { randomUUID } from 'node:crypto';
import { calculateJwkThumbprint, decodeJwt, errors as joseErrors, exportJWK, generateKeyPair, jwtVerify, SignJWT, type JWK, type CryptoKey } from 'jose';
import type { Cluster } from './cluster.js';
import { badRequest, invalid, KubeApiError, type KubeObject } from './errors.js';

/** The issuer (and default API audience) of a kubeadm cluster. */
export const ISSUER = 'https://kubernetes.default.svc.cluster.local';

export interface TokenOptions {
  /** Default: the API server's own audience, [ISSUER]. */
  audiences?: string[];
  /** Default 3600. Through the HTTP API it must be 600 or more, as on a real server. */
  expirationSeconds?: number;
  /** The Pod the token is bound to (by name; its uid is taken from the API). */
  boundPod?: string;
  /** Pretend the token was issued at this moment (to make an already expired one). Default: now. */
  issuedAt?: Date;
}

export interface MintedToken { token: string; expirationTimestamp: string; boundObjectRef?: Record<string, string> }

interface K8sClaims {
  namespace: string;
  serviceaccount: { name: string; uid: string };
  pod?: { name: string; uid: string };
  node?: { name: string; uid?: string };
}

export class TokenAuthority {
  readonly #priv: CryptoKey;
  readonly #jwk: JWK;
  private constructor(priv: CryptoKey, jwk: JWK) { this.#priv = priv; this.#jwk = jwk; }

  static async create(): Promise<TokenAuthority> {
    const { privateKey, publicKey } = await generateKeyPair('RS256', { modulusLength: 2048 });
    const jwk = await exportJWK(publicKey);
    jwk.kid = await calculateJwkThumbprint(jwk);
    jwk.alg = 'RS256';
    jwk.use = 'sig';
    return new TokenAuthority(privateKey, jwk);
  }

  /** GET /openid/v1/jwks. */
  jwks(): { keys: JWK[] } { return { keys: [this.#jwk] }; }

  async mint(cluster: Cluster, ns: string, saName: string, o: TokenOptions, fromApi: boolean): Promise<MintedToken> {
    const sa = cluster.get(cluster.findKind('v1', 'ServiceAccount'), ns, saName);
    const exp = o.expirationSeconds ?? 3600;
    if (fromApi && exp < 600) throw invalid('TokenRequest', 'authentication.k8s.io', saName, 'spec.expirationSeconds', `Invalid value: ${exp}: may not specify a duration less than 10 minutes`);
    if (fromApi && exp > 2 ** 32) throw invalid('TokenRequest', 'authentication.k8s.io', saName, 'spec.expirationSeconds', `Invalid value: ${exp}: may not specify a duration larger than 2^32 seconds`);
    const k8s: K8sClaims = { namespace: ns, serviceaccount: { name: saName, uid: String(sa.metadata.uid) } };
    let boundObjectRef: Record<string, string> | undefined;
    if (o.boundPod !== undefined) {
      const pod = cluster.get(cluster.findKind('v1', 'Pod'), ns, o.boundPod);
      const spec = (pod.spec ?? {}) as { serviceAccountName?: string; nodeName?: string };
      if (spec.serviceAccountName !== saName) {
        throw badRequest(`cannot bind token for serviceaccount "${saName}" to pod "${o.boundPod}": the pod runs as serviceaccount "${String(spec.serviceAccountName)}"`);
      }
      k8s.pod = { name: pod.metadata.name, uid: String(pod.metadata.uid) };
      boundObjectRef = { kind: 'Pod', apiVersion: 'v1', name: pod.metadata.name, uid: String(pod.metadata.uid) };
      if (spec.nodeName) {
        let node: KubeObject | undefined;
        try { node = cluster.get(cluster.findKind('v1', 'Node'), undefined, spec.nodeName); } catch { node = undefined; }
        k8s.node = { name: spec.nodeName, ...(node ? { uid: String(node.metadata.uid) } : {}) };
      }
    }
    const iat = Math.floor((o.issuedAt ?? new Date()).getTime() / 1000);
    const token = await new SignJWT({ 'kubernetes.io': k8s as unknown as Record<string, unknown> })
      .setProtectedHeader({ alg: 'RS256', kid: this.#jwk.kid! })
      .setIssuer(ISSUER)
      .setSubject(`system:serviceaccount:${ns}:${saName}`)
      .setAudience(o.audiences?.length ? o.audiences : [ISSUER])
      .setIssuedAt(iat)
      .setNotBefore(iat)
      .setExpirationTime(iat + exp)
      .setJti(randomUUID())
      .sign(this.#priv);
    return { token, expirationTimestamp: new Date((iat + exp) * 1000).toISOString().replace(/\.\d+Z$/, 'Z'), ...(boundObjectRef ? { boundObjectRef } : {}) };
  }

  /** The TokenReview status for a token: authenticated with the user, or an error worded as the real authenticator's. */
  async review(cluster: Cluster, token: string, audiences: string[] | undefined): Promise<Record<string, unknown>> {
    const fail = (why: string): Record<string, unknown> => ({ user: {}, error: `[invalid bearer token, ${why}]` });
    let claims: ReturnType<typeof decodeJwt>;
    try {
      claims = decodeJwt(token);
    } catch {
      return fail('token is not a JWT');
    }
    if (claims.iss !== ISSUER) return fail('token issuer is not the service account issuer');
    const wanted = audiences?.length ? audiences : [ISSUER];
    const tokenAuds = typeof claims.aud === 'string' ? [claims.aud] : (claims.aud ?? []);
    const auds = tokenAuds.filter((a) => wanted.includes(a));
    if (!auds.length) return fail(`token audiences ${JSON.stringify(tokenAuds)} is invalid for the target audiences ${JSON.stringify(wanted)}`);
    try {
      // go-jose's Validate allows one minute of clock skew on exp and nbf.
      await jwtVerify(token, this.#jwk, { issuer: ISSUER, algorithms: ['RS256'], clockTolerance: 60 });
    } catch (err) {
      if (err instanceof joseErrors.JWTExpired) return fail('service account token has expired');
      if (err instanceof joseErrors.JWTClaimValidationFailed && err.claim === 'nbf') return fail('service account token is not valid yet');
      return fail('square/go-jose: error in cryptographic primitive');
    }
    const k8s = claims['kubernetes.io'] as K8sClaims | undefined;
    if (!k8s?.serviceaccount) return fail('service account token claims are missing');
    const sa = tryGet(cluster, 'ServiceAccount', k8s.namespace, k8s.serviceaccount.name);
    if (!sa || sa.metadata.uid !== k8s.serviceaccount.uid) return fail('service account token has been invalidated');
    const extra: Record<string, string[]> = { 'authentication.kubernetes.io/credential-id': [`JTI=${String(claims.jti)}`] };
    if (k8s.pod) {
      const pod = tryGet(cluster, 'Pod', k8s.namespace, k8s.pod.name);
      if (!pod) return fail('service account token has been invalidated');
      if (pod.metadata.uid !== k8s.pod.uid) return fail(`pod UID (${String(pod.metadata.uid)}) does not match service account pod ref claim (${k8s.pod.uid})`);
      extra['authentication.kubernetes.io/pod-name'] = [k8s.pod.name];
      extra['authentication.kubernetes.io/pod-uid'] = [k8s.pod.uid];
    }
    if (k8s.node) {
      extra['authentication.kubernetes.io/node-name'] = [k8s.node.name];
      if (k8s.node.uid) extra['authentication.kubernetes.io/node-uid'] = [k8s.node.uid];
    }
    return {
      authenticated: true,
      user: {
        username: `system:serviceaccount:${k8s.namespace}:${k8s.serviceaccount.name}`,
        uid: k8s.serviceaccount.uid,
        groups: ['system:serviceaccounts', `system:serviceaccounts:${k8s.namespace}`, 'system:authenticated'],
        extra,
      },
      audiences: auds,
    };
  }
}

function tryGet(cluster: Cluster, kind: string, ns: string, name: string): KubeObject | undefined {
  try {
    return cluster.get(cluster.findKind('v1', kind), ns, name);
  } catch (err) {
    if (err instanceof KubeApiError && err.code === 404) return undefined;
    throw err;
  }
}

