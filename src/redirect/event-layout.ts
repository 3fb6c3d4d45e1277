// Byte layout of the kernel events (struct nm_event, nm_events_cfg in bpf/redirect.h) and
// their decoding into KernelEvent. EVENT_SIZE mirrors the header's NM_STATIC_ASSERT; the ring
// poller takes records of exactly that size and counts any other as bad (stats().badRecords).
import { endianness } from 'node:os';
import { bytesToIp } from '../net/index.js';
import type { KernelEvent, KernelEventKind, KernelEventReason } from './events.js';

const HOST_LE = endianness() === 'LE';

/** sizeof(struct nm_event): NM_STATIC_ASSERT in bpf/redirect.h says the same. */
export const EVENT_SIZE = 80;
/** sizeof(struct nm_events_cfg) */
export const EVENTS_CFG_SIZE = 8;

/** NM_EV_* by value (index). NM_EV_CONNECT_REFUSED (3) is a connect_passed with `refused`. */
const NM_EV_CONNECT_REFUSED = 3;
const KINDS: ReadonlyArray<KernelEventKind | undefined> = [
  undefined,
  'connect_redirected',
  'connect_passed',
  'connect_passed',
  'lookup_steered',
  'lookup_passed',
  'lookup_dropped',
  'close',
];

/** NM_EVR_* by value (index); 0 is "no reason". */
const REASONS: ReadonlyArray<KernelEventReason | undefined> = [
  undefined,
  'excluded_port',
  'excluded_cidr',
  'loopback',
  'not_enrolled',
  'self',
  'no_listener',
  'ipv6',
  'quota',
  'observed',
  'delivery',
  'record_failed',
  'assign_failed',
];

const NM_EVF_ENROLLED = 1;

/** Field offsets of struct nm_event. */
const OFF = {
  ts: 0,
  socketCookie: 8,
  netnsCookie: 16,
  bytesSent: 24,
  bytesReceived: 32,
  srcIp: 40,
  dstIp: 56,
  srcPort: 72,
  dstPort: 74,
  kind: 76,
  reason: 77,
  family: 78,
  flags: 79,
} as const;

function u64(b: Buffer, off: number): bigint {
  return HOST_LE ? b.readBigUInt64LE(off) : b.readBigUInt64BE(off);
}

function u16(b: Buffer, off: number): number {
  return HOST_LE ? b.readUInt16LE(off) : b.readUInt16BE(off);
}

/** A 16-byte address field: IPv4 (family 4, stored ::ffff:a.b.c.d) as dotted, else IPv6. */
function ipAt(b: Buffer, off: number, family: number): string {
  return family === 4 ? bytesToIp(b.subarray(off + 12, off + 16)) : bytesToIp(b.subarray(off, off + 16));
}

/**
 * One record; null for a kind this build does not know (a newer object than this agent),
 * which the caller counts rather than guesses at.
 */
export function decodeEvent(b: Buffer, base = 0): KernelEvent | null {
  const rec = b.subarray(base, base + EVENT_SIZE);
  if (rec.length !== EVENT_SIZE) throw new RangeError(`a kernel event is ${EVENT_SIZE} bytes, got ${rec.length}`);
  const kind = KINDS[rec[OFF.kind]!];
  if (!kind) return null;
  const family = rec[OFF.family] === 6 ? 6 : 4;
  const reason = REASONS[rec[OFF.reason]!];
  const ev: KernelEvent = {
    kind,
    socketCookie: u64(rec, OFF.socketCookie),
    netnsCookie: u64(rec, OFF.netnsCookie),
    src: { ip: ipAt(rec, OFF.srcIp, family), port: u16(rec, OFF.srcPort) },
    dst: { ip: ipAt(rec, OFF.dstIp, family), port: u16(rec, OFF.dstPort) },
    monotonicNs: u64(rec, OFF.ts),
    enrolled: (rec[OFF.flags]! & NM_EVF_ENROLLED) !== 0,
  };
  if (reason) ev.reason = reason;
  if (rec[OFF.kind] === NM_EV_CONNECT_REFUSED) ev.refused = true;
  if (kind === 'close') {
    ev.bytesSent = u64(rec, OFF.bytesSent);
    ev.bytesReceived = u64(rec, OFF.bytesReceived);
  }
  return ev;
}

/** `count` records back to back, as the ring poller delivers them; unknown kinds are skipped. */
export function decodeEvents(b: Buffer, count: number): { events: KernelEvent[]; unknown: number } {
  if (b.length !== count * EVENT_SIZE) throw new RangeError(`a batch of ${count} kernel events is ${count * EVENT_SIZE} bytes, got ${b.length}`);
  const events: KernelEvent[] = [];
  let unknown = 0;
  for (let i = 0; i < count; i++) {
    const ev = decodeEvent(b, i * EVENT_SIZE);
    if (ev) events.push(ev);
    else unknown++;
  }
  return { events, unknown };
}

/** struct nm_events_cfg: on (with the owner's pid) or off (all zero). */
export function encodeEventsCfg(enabled: boolean, ownerPid: number): Buffer {
  const b = Buffer.alloc(EVENTS_CFG_SIZE);
  if (enabled) {
    if (HOST_LE) {
      b.writeUInt32LE(1, 0);
      b.writeUInt32LE(ownerPid >>> 0, 4);
    } else {
      b.writeUInt32BE(1, 0);
      b.writeUInt32BE(ownerPid >>> 0, 4);
    }
  }
  return b;
}

export function decodeEventsCfg(b: Buffer): { enabled: boolean; ownerPid: number } {
  const enabled = (HOST_LE ? b.readUInt32LE(0) : b.readUInt32BE(0)) !== 0;
  return { enabled, ownerPid: HOST_LE ? b.readUInt32LE(4) : b.readUInt32BE(4) };
}

/** nm_events_lost's one u64. */
export function decodeLost(b: Buffer): bigint {
  return u64(b, 0);
}

/** For tests: a record as the programs write it (the inverse of decodeEvent). */
export function encodeEvent(e: { kind: number; reason?: number; flags?: number; family?: 4 | 6; src: Buffer; dst: Buffer; srcPort: number; dstPort: number; socketCookie?: bigint; netnsCookie?: bigint; ts?: bigint; bytesSent?: bigint; bytesReceived?: bigint }): Buffer {
  const b = Buffer.alloc(EVENT_SIZE);
  const w64 = (v: bigint, off: number) => (HOST_LE ? b.writeBigUInt64LE(v, off) : b.writeBigUInt64BE(v, off));
  const w16 = (v: number, off: number) => (HOST_LE ? b.writeUInt16LE(v, off) : b.writeUInt16BE(v, off));
  w64(e.ts ?? 0n, OFF.ts);
  w64(e.socketCookie ?? 0n, OFF.socketCookie);
  w64(e.netnsCookie ?? 0n, OFF.netnsCookie);
  w64(e.bytesSent ?? 0n, OFF.bytesSent);
  w64(e.bytesReceived ?? 0n, OFF.bytesReceived);
  const addr = (ip: Buffer, off: number) => {
    if (ip.length === 4) {
      b.writeUInt16BE(0xffff, off + 10);
      ip.copy(b, off + 12);
    } else ip.copy(b, off);
  };
  addr(e.src, OFF.srcIp);
  addr(e.dst, OFF.dstIp);
  w16(e.srcPort, OFF.srcPort);
  w16(e.dstPort, OFF.dstPort);
  b[OFF.kind] = e.kind;
  b[OFF.reason] = e.reason ?? 0;
  b[OFF.family] = e.family ?? 4;
  b[OFF.flags] = e.flags ?? 0;
  return b;
}
