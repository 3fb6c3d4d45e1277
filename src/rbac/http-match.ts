// The HTTP half of an L7 match (Match.http): Istio's request attributes, as its RBAC filter
// compares them (https://istio.io/latest/docs/reference/config/security/conditions/).
import { cidrContains, normalizedIpBytes, type Cidr } from '../net/index.js';
import type { HttpAttributes, HttpRequestFacts, StringMatch, ValueCondition } from '../state/index.js';
import { stringMatches } from './string-match.js';

/**
 * A claim path as ValueCondition.key: the segments joined by `.`, a `.` or `\` inside a segment
 * escaped with `\`, so `request.auth.claims[a][b]` (`a.b`) and a claim named `a.b` (`a\.b`) stay
 * apart.
 */
export function claimKey(path: readonly string[]): string {
  return path.map((s) => s.replace(/[\\.]/g, (c) => `\\${c}`)).join('.');
}

/** The segments of a claim key (claimKey's inverse). */
export function claimPath(key: string): string[] {
  const out: string[] = [];
  let cur = '';
  for (let i = 0; i < key.length; i++) {
    const c = key[i]!;
    if (c === '\\' && i + 1 < key.length) cur += key[++i];
    else if (c === '.') {
      out.push(cur);
      cur = '';
    } else cur += c;
  }
  out.push(cur);
  return out;
}

/** The string values of a claim: a string, or the strings of a list (Istio matches any of them). */
function claimValues(claims: Record<string, unknown> | undefined, key: string): string[] {
  let v: unknown = claims;
  for (const seg of claimPath(key)) {
    // Own properties only: `__proto__` or `constructor` must not resolve to something.
    if (typeof v !== 'object' || v === null || Array.isArray(v) || !Object.hasOwn(v, seg)) return [];
    v = (v as Record<string, unknown>)[seg];
  }
  if (typeof v === 'string') return [v];
  if (Array.isArray(v)) return v.filter((x): x is string => typeof x === 'string');
  return [];
}

/** A request as the matcher reads it, computed once per decision. */
export interface HttpFacts {
  req: HttpRequestFacts;
  /** Lower case: hosts compare case-insensitively (RFC 4343; Istio CVE-2021-39155). */
  host: string;
  /** `iss/sub`, or "" without a validated JWT so that `*` does not match it. */
  principal: string;
  remote: Buffer;
}

export function httpFacts(req: HttpRequestFacts, srcIp: string): HttpFacts {
  return { req, host: req.host.toLowerCase(), principal: req.requestPrincipal ?? '', remote: normalizedIpBytes(req.remoteIp ?? srcIp) };
}

/** Positive values OR-ed (empty = no constraint), negative values none may match. */
function field<T>(pos: readonly T[], neg: readonly T[], pred: (v: T) => boolean): boolean {
  if (pos.length > 0 && !pos.some(pred)) return false;
  if (neg.length > 0 && neg.some(pred)) return false;
  return true;
}

/** A condition on values that may be absent (no header, no claim): absent matches only notValues. */
function condition(c: ValueCondition, values: readonly string[], eq: (m: StringMatch, v: string) => boolean): boolean {
  return field(c.values, c.notValues, (m) => values.some((v) => eq(m, v)));
}

function lowered(m: StringMatch): StringMatch {
  if ('exact' in m) return { exact: m.exact.toLowerCase() };
  if ('prefix' in m) return { prefix: m.prefix.toLowerCase() };
  if ('suffix' in m) return { suffix: m.suffix.toLowerCase() };
  return m;
}

// Envoy's present_match holds for a header sent empty.
const headerMatches = (m: StringMatch, v: string): boolean => ('presence' in m ? true : stringMatches(m, v));

export function isEmptyHttp(a: HttpAttributes): boolean {
  return (
    a.methods.length + a.notMethods.length + a.paths.length + a.notPaths.length + a.hosts.length + a.notHosts.length +
      a.requestPrincipals.length + a.notRequestPrincipals.length + a.remoteIps.length + a.notRemoteIps.length +
      a.headers.length + a.claims.length ===
    0
  );
}

/** Whether a request has every HTTP attribute of a match. */
export function httpMatches(a: HttpAttributes, f: HttpFacts): boolean {
  const inCidr = (c: Cidr) => cidrContains(c, f.remote);
  return (
    field(a.methods, a.notMethods, (m) => stringMatches(m, f.req.method)) &&
    field(a.paths, a.notPaths, (m) => stringMatches(m, f.req.path)) &&
    field(a.hosts, a.notHosts, (m) => stringMatches(lowered(m), f.host)) &&
    field(a.requestPrincipals, a.notRequestPrincipals, (m) => stringMatches(m, f.principal)) &&
    field(a.remoteIps, a.notRemoteIps, inCidr) &&
    a.headers.every((c) => {
      const v = f.req.header(c.key.toLowerCase());
      return condition(c, v === undefined ? [] : [v], headerMatches);
    }) &&
    a.claims.every((c) => condition(c, claimValues(f.req.claims, c.key), stringMatches))
  );
}
