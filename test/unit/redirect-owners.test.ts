// The owner rule of the redirect maps, over in-memory maps standing in for the kernel's: a
// pod's entries are deleted only while they name its netns cookie, so a pod whose IP a newer
// pod was given never removes that pod's entries; and the byte layouts the rule reads.
import { describe, expect, it } from 'vitest';
import {
  NM_LISTENER_HBONE,
  NM_LISTENER_PLAINTEXT,
  decodePodConns,
  decodePodOwner,
  decodeStats,
  encodeEnrolled,
  encodeListenerKey,
  encodePodCfg,
  encodePodOwner,
  ipv4Key,
  podOwnerKey,
  u64,
} from '../../src/redirect/layout.js';
import type { MapFds } from '../../src/redirect/loader.js';
import type { NativeBinding } from '../../src/redirect/native.js';
import { PodOwners } from '../../src/redirect/owners.js';

const FDS: MapFds = { podCfg: 1, cookieDst: 2, origDst: 3, enrolled: 4, listeners: 5, podOwner: 6, podConns: 7, stats: 8, events: 9, eventsCfg: 10, eventsLost: 11, splice: 12, splicePeer: 13, spliceTaken: 14 };

/** The maps by fd, keyed by the key's hex; enough of the binding for PodOwners. */
function fakeMaps() {
  const maps = new Map<number, Map<string, Buffer>>(Object.values(FDS).map((fd) => [fd, new Map()]));
  const m = (fd: number) => maps.get(fd)!;
  const binding = {
    mapLookup: (fd: number, k: Buffer) => m(fd).get(k.toString('hex')) ?? null,
    mapUpdate: (fd: number, k: Buffer, v: Buffer) => void m(fd).set(k.toString('hex'), Buffer.from(v)),
    mapDelete: (fd: number, k: Buffer) => m(fd).delete(k.toString('hex')),
    mapNextKey: (fd: number, k: Buffer | null) => {
      const keys = [...m(fd).keys()];
      const i = k === null ? 0 : keys.indexOf(k.toString('hex')) + 1;
      return i < keys.length ? Buffer.from(keys[i]!, 'hex') : null;
    },
  } as unknown as NativeBinding;
  return { binding, has: (fd: number, k: Buffer) => m(fd).has(k.toString('hex')) };
}

const IP = '10.244.0.9';
const A = 11n; // pod A's netns cookie
const B = 22n; // pod B's, given A's IP later

/** What attachPod writes for a pod. */
function attach(binding: NativeBinding, owners: PodOwners | null, uid: string, cookie: bigint, ip = IP): void {
  binding.mapUpdate(FDS.podCfg, u64(cookie), encodePodCfg({ podIp: ip, excludePorts: [], excludeCidrs: [] }), 0);
  binding.mapUpdate(FDS.podConns, u64(cookie), Buffer.alloc(16), 0);
  binding.mapUpdate(FDS.enrolled, ipv4Key(ip), encodeEnrolled({ flags: 0, excludePorts: [], netnsCookie: cookie }), 0);
  binding.mapUpdate(FDS.listeners, encodeListenerKey(ip, NM_LISTENER_PLAINTEXT), u64(cookie * 100n), 0);
  binding.mapUpdate(FDS.listeners, encodeListenerKey(ip, NM_LISTENER_HBONE), u64(cookie * 100n + 1n), 0);
  owners?.record(uid, { ip, netnsCookie: cookie });
}

describe('deleting a pod\'s map entries by owner', () => {
  it('leaves the entries of pod B, given pod A\'s IP, when A is deleted; B\'s own deletion removes them', () => {
    const { binding, has } = fakeMaps();
    const owners = new PodOwners(binding, FDS);
    attach(binding, owners, 'a', A);
    attach(binding, owners, 'b', B);

    owners.deleteOwned('a', { ip: IP, netnsCookie: A });
    owners.forget('a', A);
    expect(has(FDS.podCfg, u64(A))).toBe(false);
    expect(has(FDS.podConns, u64(A))).toBe(false);
    expect(has(FDS.enrolled, ipv4Key(IP))).toBe(true);
    expect(has(FDS.podCfg, u64(B))).toBe(true);
    expect(has(FDS.listeners, encodeListenerKey(IP, NM_LISTENER_PLAINTEXT))).toBe(true);
    expect(owners.recorded('a')).toBeNull();
    expect(owners.recorded('b')).toEqual({ ip: IP, netnsCookie: B });

    owners.deleteOwned('b', owners.recorded('b')!);
    owners.forget('b', B);
    for (const [fd, k] of [[FDS.enrolled, ipv4Key(IP)], [FDS.podCfg, u64(B)], [FDS.podConns, u64(B)], [FDS.listeners, encodeListenerKey(IP, NM_LISTENER_PLAINTEXT)], [FDS.listeners, encodeListenerKey(IP, NM_LISTENER_HBONE)]] as const) {
      expect(has(fd, k)).toBe(false);
    }
    expect(owners.recorded('b')).toBeNull();
  });

  it('takes an unrecorded pod (an older agent attached it) by its IP only when no recorded pod names that entry\'s netns', () => {
    const { binding, has } = fakeMaps();
    const owners = new PodOwners(binding, FDS);
    attach(binding, null, 'old', A); // no owner record
    attach(binding, owners, 'b', B); // B now has the IP, recorded
    owners.deleteOwned('old', { ip: IP });
    expect(has(FDS.enrolled, ipv4Key(IP))).toBe(true);
    expect(has(FDS.podCfg, u64(B))).toBe(true);

    // The twin: nothing recorded names the entry's netns, so it is the old pod's own.
    const fresh = fakeMaps();
    const o2 = new PodOwners(fresh.binding, FDS);
    attach(fresh.binding, null, 'old', A);
    o2.deleteOwned('old', { ip: IP });
    expect(fresh.has(FDS.enrolled, ipv4Key(IP))).toBe(false);
    expect(fresh.has(FDS.podCfg, u64(A))).toBe(false);
  });

  it('keeps what a re-enrollment of the same UID just wrote', () => {
    const { binding, has } = fakeMaps();
    const owners = new PodOwners(binding, FDS);
    attach(binding, owners, 'a', A, '10.244.0.1'); // first enrollment
    attach(binding, owners, 'a', A, IP); // same netns, new IP
    owners.deleteOwned('a', { ip: '10.244.0.1', netnsCookie: A }, { ip: IP, netnsCookie: A });
    expect(has(FDS.enrolled, ipv4Key('10.244.0.1'))).toBe(false);
    expect(has(FDS.enrolled, ipv4Key(IP))).toBe(true);
    expect(has(FDS.podCfg, u64(A))).toBe(true);
    expect(has(FDS.podConns, u64(A))).toBe(true);
  });

  it('does not forget a record another agent rewrote for another netns', () => {
    const { binding } = fakeMaps();
    const owners = new PodOwners(binding, FDS);
    owners.record('a', { ip: IP, netnsCookie: B });
    owners.forget('a', A);
    expect(owners.recorded('a')).toEqual({ ip: IP, netnsCookie: B });
    owners.forget('a', B);
    expect(owners.recorded('a')).toBeNull();
  });
});

describe('layouts of nm_pod_owner, nm_pod_conns and nm_stats', () => {
  it('keys an owner by the SHA-256 of the UID and round-trips its value', () => {
    expect(podOwnerKey('x'.repeat(253))).toHaveLength(32);
    expect(podOwnerKey('a').equals(podOwnerKey('b'))).toBe(false);
    const v = encodePodOwner({ ip: IP, netnsCookie: 2n ** 40n + 3n });
    expect(v).toHaveLength(16);
    expect(v.subarray(8, 12)).toEqual(Buffer.from([10, 244, 0, 9])); // network order
    expect(decodePodOwner(v)).toEqual({ ip: IP, netnsCookie: 2n ** 40n + 3n });
  });

  it('reads the counters in struct order, and a count below zero as 0', () => {
    const c = Buffer.alloc(16);
    c.writeBigUInt64LE(2n ** 64n - 1n, 0);
    c.writeBigUInt64LE(5n, 8);
    expect(decodePodConns(c)).toEqual({ entries: 0, refused: 5 });
    const s = Buffer.alloc(64);
    for (let i = 0; i < 8; i++) s.writeBigUInt64LE(BigInt(i + 1), 8 * i);
    expect(decodeStats(s)).toEqual({ captured: 1, recordFailed: 2, quotaRefused: 3, established: 4, closed: 5, evictedCookie: 6, evictedOrig: 7, untracked: 8 });
  });
});
