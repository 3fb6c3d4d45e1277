// Byte layouts of the structs in bpf/redirect.h, as map keys and values. Fields the
// header calls "network order" are big-endian; "host order" fields follow this machine.
import { createHash } from 'node:crypto';
import { endianness } from 'node:os';
import { intToIpv4, ipv4ToInt, prefixMask } from '../net/index.js';
import type { Cidr4 } from './validate.js';

const HOST_LE = endianness() === 'LE';

export const NM_MAX_EXCLUDES = 8;
export const NM_LISTENER_PLAINTEXT = 0;
export const NM_LISTENER_HBONE = 1;
export const NM_ENROLLED_F_FAIL_OPEN = 1;

/** sizeof() of each struct, checked against the loaded maps by Redirector.open. */
export const SIZES = {
  podCfg: 88,
  addr4: 8,
  origDstKey: 16,
  enrolled: 32,
  listenerKey: 8,
  podOwnerKey: 32,
  podOwner: 16,
  podConns: 16,
  stats: 64,
  splicePeer: 24,
} as const;

/** NM_DEFAULT_ORIG_DST_POD_QUOTA: captured connections one pod may hold open at once. */
export const DEFAULT_ORIG_DST_POD_QUOTA = 16384;

/** BPF_ANY: create or replace. */
export const BPF_ANY = 0;

function writeU16(buf: Buffer, value: number, offset: number): void {
  if (HOST_LE) buf.writeUInt16LE(value, offset);
  else buf.writeUInt16BE(value, offset);
}

function writeU32(buf: Buffer, value: number, offset: number): void {
  if (HOST_LE) buf.writeUInt32LE(value, offset);
  else buf.writeUInt32BE(value, offset);
}

function writeU64(buf: Buffer, value: bigint, offset: number): void {
  if (HOST_LE) buf.writeBigUInt64LE(value, offset);
  else buf.writeBigUInt64BE(value, offset);
}

function readU16(buf: Buffer, offset: number): number {
  return HOST_LE ? buf.readUInt16LE(offset) : buf.readUInt16BE(offset);
}

function readU32(buf: Buffer, offset: number): number {
  return HOST_LE ? buf.readUInt32LE(offset) : buf.readUInt32BE(offset);
}

function readU64(buf: Buffer, offset: number): bigint {
  return HOST_LE ? buf.readBigUInt64LE(offset) : buf.readBigUInt64BE(offset);
}

/** An IPv4 address as 4 bytes in network order. */
function writeIPv4(buf: Buffer, ip: string, offset: number): void {
  buf.writeUInt32BE(ipv4ToInt(ip), offset);
}

function readIPv4(buf: Buffer, offset: number): string {
  return intToIpv4(buf.readUInt32BE(offset));
}

/** A host-order u16 (a const volatile global such as nm_outbound_port). */
export function u16(value: number): Buffer {
  const b = Buffer.alloc(2);
  writeU16(b, value, 0);
  return b;
}

/** A host-order u32. */
export function u32(value: number): Buffer {
  const b = Buffer.alloc(4);
  writeU32(b, value, 0);
  return b;
}

/** A host-order u64 key, e.g. a netns or socket cookie. */
export function u64(value: bigint): Buffer {
  const b = Buffer.alloc(8);
  writeU64(b, value, 0);
  return b;
}

export function readU64At(buf: Buffer, offset = 0): bigint {
  return readU64(buf, offset);
}

/** nm_enrolled key: the pod IPv4 in network order. */
export function ipv4Key(ip: string): Buffer {
  const b = Buffer.alloc(4);
  writeIPv4(b, ip, 0);
  return b;
}

export interface PodCfg {
  podIp: string;
  excludePorts: number[];
  excludeCidrs: Cidr4[];
}

/** struct nm_pod_cfg */
export function encodePodCfg(cfg: PodCfg): Buffer {
  const b = Buffer.alloc(SIZES.podCfg);
  writeIPv4(b, cfg.podIp, 0);
  writeU16(b, cfg.excludePorts.length, 4);
  writeU16(b, cfg.excludeCidrs.length, 6);
  cfg.excludePorts.forEach((p, i) => writeU16(b, p, 8 + 2 * i));
  cfg.excludeCidrs.forEach((c, i) => {
    b.writeUInt32BE(ipv4ToInt(c.addr), 24 + 8 * i);
    b.writeUInt32BE(prefixMask(c.prefix), 28 + 8 * i);
  });
  return b;
}

export function decodePodCfg(b: Buffer): PodCfg {
  const nPorts = Math.min(readU16(b, 4), NM_MAX_EXCLUDES);
  const nCidrs = Math.min(readU16(b, 6), NM_MAX_EXCLUDES);
  return {
    podIp: readIPv4(b, 0),
    excludePorts: Array.from({ length: nPorts }, (_, i) => readU16(b, 8 + 2 * i)),
    // A mask's prefix length is its count of leading one bits.
    excludeCidrs: Array.from({ length: nCidrs }, (_, i) => ({
      addr: readIPv4(b, 24 + 8 * i),
      prefix: Math.clz32(~b.readUInt32BE(28 + 8 * i) >>> 0),
    })),
  };
}

export interface Enrolled {
  flags: number;
  excludePorts: number[];
  netnsCookie: bigint;
}

/** struct nm_enrolled */
export function encodeEnrolled(e: Enrolled): Buffer {
  const b = Buffer.alloc(SIZES.enrolled);
  writeU32(b, e.flags, 0);
  writeU16(b, e.excludePorts.length, 4);
  e.excludePorts.forEach((p, i) => writeU16(b, p, 8 + 2 * i));
  writeU64(b, e.netnsCookie, 24);
  return b;
}

export function decodeEnrolled(b: Buffer): Enrolled {
  const n = Math.min(readU16(b, 4), NM_MAX_EXCLUDES);
  return {
    flags: readU32(b, 0),
    excludePorts: Array.from({ length: n }, (_, i) => readU16(b, 8 + 2 * i)),
    netnsCookie: readU64(b, 24),
  };
}

/** struct nm_listener_key */
export function encodeListenerKey(podIp: string, kind: number): Buffer {
  const b = Buffer.alloc(SIZES.listenerKey);
  writeIPv4(b, podIp, 0);
  writeU32(b, kind, 4);
  return b;
}

/** struct nm_orig_dst_key */
export function encodeOrigDstKey(netnsCookie: bigint, clientIp: string, clientPort: number): Buffer {
  const b = Buffer.alloc(SIZES.origDstKey);
  writeU64(b, netnsCookie, 0);
  writeIPv4(b, clientIp, 8);
  writeU16(b, clientPort, 12);
  return b;
}

/** struct nm_addr4 */
export function decodeAddr4(b: Buffer): { ip: string; port: number } {
  return { ip: readIPv4(b, 0), port: readU16(b, 4) };
}

/** nm_pod_owner key: SHA-256 of the pod UID. */
export function podOwnerKey(uid: string): Buffer {
  return createHash('sha256').update(uid, 'utf8').digest();
}

export interface PodOwner {
  ip: string;
  netnsCookie: bigint;
}

/** struct nm_pod_owner */
export function encodePodOwner(o: PodOwner): Buffer {
  const b = Buffer.alloc(SIZES.podOwner);
  writeU64(b, o.netnsCookie, 0);
  writeIPv4(b, o.ip, 8);
  return b;
}

export function decodePodOwner(b: Buffer): PodOwner {
  return { netnsCookie: readU64(b, 0), ip: readIPv4(b, 8) };
}

/** struct nm_pod_conns; a count the kernel let go below zero (it must not) reads as 0. */
export function decodePodConns(b: Buffer): { entries: number; refused: number } {
  const entries = readU64(b, 0);
  return { entries: entries >= 1n << 63n ? 0 : Number(entries), refused: Number(readU64(b, 8)) };
}

/** The fields of struct nm_stats, in order. */
export const STAT_FIELDS = ['captured', 'recordFailed', 'quotaRefused', 'established', 'closed', 'evictedCookie', 'evictedOrig', 'untracked'] as const;
export type KernelStats = Record<(typeof STAT_FIELDS)[number], number>;

/** struct nm_stats */
export function decodeStats(b: Buffer): KernelStats {
  return Object.fromEntries(STAT_FIELDS.map((f, i) => [f, Number(readU64(b, 8 * i))])) as KernelStats;
}
