// Argument checks for the redirect facade. The addon re-checks only what it casts, so
// every value that reaches it is checked here, with a message naming the argument.
import { isAbsolute } from 'node:path';
import { isIp, isIPv4, parseIpv4Cidr } from '../net/index.js';
import type { InboundKind, PodRedirectSpec } from './types.js';

/** Kernel-side lists (ports, CIDRs) hold at most this many entries (NM_MAX_EXCLUDES). */
export const MAX_EXCLUDES = 8;

function describe(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value);
  if (typeof value === 'bigint') return `${value}n`;
  if (value === null || typeof value !== 'object') return String(value);
  return Array.isArray(value) ? 'an array' : 'an object';
}

export function assertString(value: unknown, name: string): asserts value is string {
  if (typeof value !== 'string') throw new TypeError(`${name} must be a string, got ${describe(value)}`);
}

/** A dotted-quad IPv4 address, e.g. "10.244.1.5". */
export function assertIPv4(value: unknown, name: string): asserts value is string {
  assertString(value, name);
  if (!isIPv4(value)) throw new TypeError(`${name} must be an IPv4 address like "10.244.1.5", got ${describe(value)}`);
}

/** An IPv4 or IPv6 literal. */
export function assertIP(value: unknown, name: string): asserts value is string {
  assertString(value, name);
  if (!isIp(value)) throw new TypeError(`${name} must be an IPv4 or IPv6 address, got ${describe(value)}`);
}

export function assertInteger(value: unknown, name: string, min: number, max: number): asserts value is number {
  if (typeof value !== 'number' || !Number.isInteger(value)) {
    throw new TypeError(`${name} must be an integer, got ${describe(value)}`);
  }
  if (value < min || value > max) throw new RangeError(`${name} must be in [${min}, ${max}], got ${value}`);
}

/** A TCP port; 0 only when allowZero (let the kernel pick). */
export function assertPort(value: unknown, name: string, allowZero = false): asserts value is number {
  assertInteger(value, name, allowZero ? 0 : 1, 65535);
}

export function assertFd(value: unknown, name = 'fd'): asserts value is number {
  assertInteger(value, name, 0, 2 ** 31 - 1);
}

function assertList(value: unknown, name: string): asserts value is unknown[] {
  if (!Array.isArray(value)) throw new TypeError(`${name} must be an array, got ${describe(value)}`);
  if (value.length > MAX_EXCLUDES) {
    throw new RangeError(`${name} holds at most ${MAX_EXCLUDES} entries (the kernel-side limit), got ${value.length}`);
  }
}

/** Up to 8 ports; duplicates are dropped. */
export function portList(value: unknown, name: string): number[] {
  if (value === undefined) return [];
  assertList(value, name);
  value.forEach((p, i) => assertPort(p, `${name}[${i}]`));
  return [...new Set(value as number[])];
}

export interface Cidr4 {
  /** The network address, e.g. "10.96.0.0". */
  addr: string;
  prefix: number;
}

/** "a.b.c.d/n" with no host bits set. */
export function parseCidr4(value: unknown, name: string): Cidr4 {
  assertString(value, name);
  const c = parseIpv4Cidr(value, name);
  return { addr: c.addr, prefix: c.prefix };
}

export function cidrList(value: unknown, name: string): Cidr4[] {
  if (value === undefined) return [];
  assertList(value, name);
  return value.map((c, i) => parseCidr4(c, `${name}[${i}]`));
}

/** An absolute path without NUL bytes. */
export function assertAbsolutePath(value: unknown, name: string): asserts value is string {
  assertString(value, name);
  if (!isAbsolute(value)) throw new TypeError(`${name} must be an absolute path, got ${describe(value)}`);
  if (value.includes('\0')) throw new TypeError(`${name} must not contain NUL bytes`);
}

/** A pod UID is one path component: letters, digits, '.', '_', '-'; not "." or "..". */
export function assertUid(value: unknown, name = 'uid'): asserts value is string {
  assertString(value, name);
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$/.test(value)) {
    throw new TypeError(
      `${name} must be 1-253 characters of letters, digits, '.', '_' or '-' starting with a letter or digit, got ${describe(value)}`,
    );
  }
}

export function assertInboundKind(value: unknown, name = 'kind'): asserts value is InboundKind {
  if (value !== 'plaintext' && value !== 'hbone') {
    throw new TypeError(`${name} must be 'plaintext' or 'hbone', got ${describe(value)}`);
  }
}

/** A PodRedirectSpec with every optional list filled in, after checking every field. */
export interface CheckedPodSpec {
  uid: string;
  cgroupPath: string;
  netnsPath: string;
  ip: string;
  excludeOutboundPorts: number[];
  excludeOutboundCidrs: Cidr4[];
  excludeInboundPorts: number[];
  inboundFailOpen: boolean;
}

export function checkPodSpec(spec: unknown): CheckedPodSpec {
  if (spec === null || typeof spec !== 'object') throw new TypeError(`spec must be an object, got ${describe(spec)}`);
  const s = spec as Partial<PodRedirectSpec>;
  assertUid(s.uid, 'spec.uid');
  assertAbsolutePath(s.cgroupPath, 'spec.cgroupPath');
  assertAbsolutePath(s.netnsPath, 'spec.netnsPath');
  assertIPv4(s.ip, 'spec.ip');
  if (s.inboundFailOpen !== undefined && typeof s.inboundFailOpen !== 'boolean') {
    throw new TypeError(`spec.inboundFailOpen must be a boolean, got ${describe(s.inboundFailOpen)}`);
  }
  return {
    uid: s.uid,
    cgroupPath: s.cgroupPath,
    netnsPath: s.netnsPath,
    ip: s.ip,
    excludeOutboundPorts: portList(s.excludeOutboundPorts, 'spec.excludeOutboundPorts'),
    excludeOutboundCidrs: cidrList(s.excludeOutboundCidrs, 'spec.excludeOutboundCidrs'),
    excludeInboundPorts: portList(s.excludeInboundPorts, 'spec.excludeInboundPorts'),
    inboundFailOpen: s.inboundFailOpen ?? false,
  };
}
