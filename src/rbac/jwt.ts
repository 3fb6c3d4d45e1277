// RequestAuthentication at the proxy: finds a request's JWT where the JwtRules say and verifies
// it with jose against the rule's inline JWKS, with the outcomes of Envoy's jwt_authn for Istio.
import { createLocalJWKSet, decodeJwt, jwtVerify, type CryptoKey, type JWTPayload, type JWTVerifyGetKey, type JWTVerifyOptions, type JWTVerifyResult } from 'jose';
import type { JwtRule } from '../state/index.js';

/** What the verifier reads of a request (HttpRequestHead fits). */
export interface TokenSource {
  /** A header's first value, by lower-case name. */
  header(name: string): string | undefined;
  /** The request target, query string included (for fromParams). */
  path: string;
}

/**
 * No token: nothing (the request goes on without a principal, as in Istio). A verified token:
 * its `iss/sub` and claims, and the headers to remove before forwarding (none when the rule
 * sets forwardOriginalToken). A token that does not verify: why (the proxy answers 401).
 */
export type JwtOutcome = { principal?: string; claims?: Record<string, unknown>; strip?: string[] } | { error: string };

export interface JwtVerifierOptions {
  /** Leeway for exp and nbf, in seconds (Envoy's clock_skew_seconds default: 60). */
  clockSkewSeconds?: number;
  /** The clock, for tests. */
  now?: () => Date;
}

// Envoy's defaults when a rule names no location: the bearer token, then `?access_token=`.
const DEFAULT_HEADER = { name: 'authorization', prefix: 'Bearer ' };
const DEFAULT_PARAM = 'access_token';
/** Distinct JWKS texts kept parsed; config holds few, so reaching this means churn. */
const MAX_KEY_SETS = 256;

type KeySet = { get: JWTVerifyGetKey } | { error: string };

interface Found {
  token: string;
  /** The rules that read the token where it was found. */
  rules: JwtRule[];
  headers: Set<string>;
}

/** Envoy's wording for each jose failure. */
function reason(err: unknown): string {
  const e = err as { code?: unknown; claim?: unknown };
  switch (e?.code) {
    case 'ERR_JWT_EXPIRED':
      return 'Jwt is expired';
    case 'ERR_JWT_CLAIM_VALIDATION_FAILED':
      if (e.claim === 'aud') return 'Audiences in Jwt are not allowed';
      if (e.claim === 'nbf') return 'Jwt not yet valid';
      if (e.claim === 'iss') return 'Jwt issuer is not configured';
      return 'Jwt verification fails';
    case 'ERR_JWKS_NO_MATCHING_KEY':
      return 'Jwks doesn\'t have key to match kid or alg from Jwt';
    case 'ERR_JWT_INVALID':
    case 'ERR_JWS_INVALID':
      return 'Jwt is not in the form of Header.Payload.Signature';
    case 'ERR_JOSE_NOT_SUPPORTED':
    case 'ERR_JOSE_ALG_NOT_ALLOWED':
      return 'Jwt algorithm is not supported';
    default:
      return 'Jwt verification fails';
  }
}

function lower(s: string): string {
  return s.toLowerCase();
}

export class JwtVerifier {
  readonly #keySets = new Map<string, KeySet>();
  readonly #skew: number;
  readonly #now: () => Date;

  constructor(opts: JwtVerifierOptions = {}) {
    this.#skew = opts.clockSkewSeconds ?? 60;
    this.#now = opts.now ?? (() => new Date());
  }

  /** Never rejects: any failure, garbage input included, is an `{ error }`. */
  async verify(rules: readonly JwtRule[], req: TokenSource): Promise<JwtOutcome> {
    let found: Found[];
    try {
      found = this.#extract(rules, req);
    } catch {
      return { error: 'Jwt verification fails' };
    }
    if (found.length === 0) return {};
    let firstError: string | undefined;
    for (const f of found) {
      const r = await this.#verifyToken(f);
      if (!('error' in r)) return r;
      firstError ??= r.error;
    }
    return { error: firstError! };
  }

  /** Each distinct token where some rule looks for it, in rule order. */
  #extract(rules: readonly JwtRule[], req: TokenSource): Found[] {
    const byToken = new Map<string, Found>();
    const add = (token: string, rule: JwtRule, header?: string) => {
      let f = byToken.get(token);
      if (!f) byToken.set(token, (f = { token, rules: [], headers: new Set() }));
      if (!f.rules.includes(rule)) f.rules.push(rule);
      if (header) f.headers.add(header);
    };
    let params: URLSearchParams | undefined;
    const param = (name: string): string | null => {
      if (!params) {
        const q = req.path.indexOf('?');
        params = new URLSearchParams(q < 0 ? '' : req.path.slice(q + 1));
      }
      return params.get(name);
    };
    for (const rule of rules) {
      const defaults = rule.fromHeaders.length === 0 && rule.fromParams.length === 0;
      const headers = defaults ? [DEFAULT_HEADER] : rule.fromHeaders;
      for (const h of headers) {
        const name = lower(h.name);
        const v = req.header(name);
        if (v === undefined) continue;
        // The auth scheme is case-insensitive (RFC 7235); a custom prefix is compared as given.
        const has = h === DEFAULT_HEADER ? lower(v.slice(0, h.prefix.length)) === lower(h.prefix) : v.startsWith(h.prefix);
        if (!has) continue;
        const token = v.slice(h.prefix.length).trim();
        if (token) add(token, rule, name);
      }
      for (const p of defaults ? [DEFAULT_PARAM] : rule.fromParams) {
        const token = param(p)?.trim();
        if (token) add(token, rule);
      }
    }
    return [...byToken.values()];
  }

  async #verifyToken(f: Found): Promise<JwtOutcome> {
    let iss: unknown;
    try {
      iss = decodeJwt(f.token).iss;
    } catch (err) {
      return { error: reason(err) };
    }
    const rules = f.rules.filter((r) => r.issuer === iss);
    if (rules.length === 0) return { error: 'Jwt issuer is not configured' };
    let firstError: string | undefined;
    for (const rule of rules) {
      const keys = this.#keySet(rule.jwks);
      if ('error' in keys) {
        firstError ??= keys.error;
        continue;
      }
      const opts: JWTVerifyOptions = { issuer: rule.issuer, clockTolerance: this.#skew, currentDate: this.#now() };
      if (rule.audiences.length > 0) opts.audience = rule.audiences;
      try {
        const { payload } = await verifyWithAnyKey(f.token, keys.get, opts);
        return outcome(payload, rule, f.headers);
      } catch (err) {
        firstError ??= reason(err);
      }
    }
    return { error: firstError ?? 'Jwt verification fails' };
  }

  #keySet(jwks: string): KeySet {
    let k = this.#keySets.get(jwks);
    if (k) return k;
    try {
      k = { get: createLocalJWKSet(JSON.parse(jwks) as Parameters<typeof createLocalJWKSet>[0]) };
    } catch {
      k = { error: 'Jwks is invalid' };
    }
    if (this.#keySets.size >= MAX_KEY_SETS) this.#keySets.clear();
    this.#keySets.set(jwks, k);
    return k;
  }
}

/** jose leaves several keys that fit the token's kid and alg to the caller: try each. */
async function verifyWithAnyKey(token: string, get: JWTVerifyGetKey, opts: JWTVerifyOptions): Promise<JWTVerifyResult> {
  try {
    return await jwtVerify(token, get, opts);
  } catch (err) {
    if ((err as { code?: unknown }).code !== 'ERR_JWKS_MULTIPLE_MATCHING_KEYS') throw err;
    let last: unknown = err;
    for await (const key of err as AsyncIterable<CryptoKey>) {
      try {
        return await jwtVerify(token, key, opts);
      } catch (e) {
        last = e;
        if ((e as { code?: unknown }).code !== 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED') break;
      }
    }
    throw last;
  }
}

function outcome(payload: JWTPayload, rule: JwtRule, headers: ReadonlySet<string>): JwtOutcome {
  const out: { principal?: string; claims: Record<string, unknown>; strip?: string[] } = { claims: payload };
  // Istio's request principal is `iss/sub`; a token without a subject has none.
  if (typeof payload.iss === 'string' && typeof payload.sub === 'string' && payload.sub) out.principal = `${payload.iss}/${payload.sub}`;
  if (!rule.forwardOriginalToken && headers.size > 0) out.strip = [...headers];
  return out;
}
