// The HBONE request line and headers: `:authority` as the target ip:port, RFC 7239
// `forwarded: for=...`, and W3C `traceparent`, parsed strictly and formatted canonically.
import { randomBytes } from 'node:crypto';
import { isIP } from 'node:net';
import type { SocketAddress } from '../types.js';

/** The response header naming the policy that denied a CONNECT (401 only; nodemesh's own). */
export const DENY_POLICY_HEADER = 'x-nodemesh-deny-policy';

/**
 * Parses `:authority` as an address literal and port: `10.0.0.5:8080` or `[fd00::5]:8080`.
 * Returns undefined for anything else (host names, a missing or out-of-range port), since an
 * HBONE target is always an address the source already resolved.
 */
export function parseAuthority(authority: string | undefined): SocketAddress | undefined {
  if (!authority) return undefined;
  let host: string;
  let port: string;
  if (authority.startsWith('[')) {
    const end = authority.indexOf(']');
    if (end < 0 || authority[end + 1] !== ':') return undefined;
    host = authority.slice(1, end);
    port = authority.slice(end + 2);
    if (isIP(host) !== 6) return undefined;
  } else {
    const colon = authority.lastIndexOf(':');
    if (colon < 0) return undefined;
    host = authority.slice(0, colon);
    port = authority.slice(colon + 1);
    if (isIP(host) !== 4) return undefined;
  }
  if (!/^[0-9]{1,5}$/.test(port)) return undefined;
  const p = Number(port);
  if (p < 1 || p > 65535) return undefined;
  return { ip: host, port: p };
}

export function formatAuthority(a: SocketAddress): string {
  return isIP(a.ip) === 6 ? `[${a.ip}]:${a.port}` : `${a.ip}:${a.port}`;
}

/** `for="10.0.0.1"`, the form Istio sends (RFC 7239 §4, the value quoted). */
export function formatForwarded(ip: string): string {
  return isIP(ip) === 6 ? `for="[${ip}]"` : `for="${ip}"`;
}

/**
 * The client address from a `forwarded` header: the `for` parameter of its first element,
 * quoted or not (`for="10.0.0.1"`, `for=10.0.0.1`, `for="[fd00::1]:4711"`, `for="10.0.0.1:4711"`).
 * Only IP addresses are returned; obfuscated identifiers and `unknown` yield undefined.
 * https://www.rfc-editor.org/rfc/rfc7239#section-4
 */
export function parseForwardedFor(header: string | string[] | undefined): string | undefined {
  if (header === undefined) return undefined;
  const first = (Array.isArray(header) ? header[0] : header)?.split(',')[0];
  if (!first) return undefined;
  for (const pair of first.split(';')) {
    const eq = pair.indexOf('=');
    if (eq < 0) continue;
    if (pair.slice(0, eq).trim().toLowerCase() !== 'for') continue;
    let v = pair.slice(eq + 1).trim();
    if (v.startsWith('"')) {
      if (v.length < 2 || !v.endsWith('"')) return undefined;
      v = v.slice(1, -1);
    }
    if (v.startsWith('[')) {
      const end = v.indexOf(']');
      const ip = end > 0 ? v.slice(1, end) : '';
      return isIP(ip) === 6 ? ip : undefined;
    }
    if (isIP(v) === 4) return v;
    // IPv4 with a port: "10.0.0.1:4711".
    const colon = v.lastIndexOf(':');
    if (colon > 0 && isIP(v.slice(0, colon)) === 4 && /^[0-9]{1,5}$/.test(v.slice(colon + 1))) return v.slice(0, colon);
    return undefined;
  }
  return undefined;
}

const TRACEPARENT = /^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$/;

/**
 * Whether a `traceparent` is valid per W3C Trace Context: version 00 exactly as specified, a
 * later version with at least the 00 fields, never version ff, and non-zero trace and span ids.
 * https://www.w3.org/TR/trace-context/#traceparent-header
 */
export function isValidTraceparent(v: string | undefined): v is string {
  if (!v) return false;
  const m = TRACEPARENT.exec(v);
  if (!m) return false;
  const [, version, traceId, spanId, , rest] = m;
  if (version === 'ff') return false;
  if (version === '00' && rest !== undefined) return false;
  return !/^0+$/.test(traceId!) && !/^0+$/.test(spanId!);
}

/** A new sampled-off traceparent with random ids, for requests that arrive without one. */
export function newTraceparent(): string {
  const b = randomBytes(24);
  // All-zero ids are invalid; 2^-128 odds, but make it impossible.
  b[0]! |= 1;
  b[16]! |= 1;
  return `00-${b.subarray(0, 16).toString('hex')}-${b.subarray(16).toString('hex')}-00`;
}
