// What the kernel counts about the original-destination maps: the node-wide nm_stats counters
// and each pod's nm_pod_conns entry (open captured connections, quota refusals).
import { decodePodConns, decodeStats, readU64At, u32 } from './layout.js';
import type { MapFds } from './loader.js';
import { nativeFailure, type NativeBinding } from './native.js';
import type { OrigDstStats } from './types.js';

/** Reads nm_stats and every nm_pod_conns entry; `ownerOf` names the pod of a netns cookie. */
export function readOrigDstStats(
  binding: NativeBinding,
  maps: MapFds,
  limits: { capacity: number; podQuota: number },
  ownerOf: (netnsCookie: bigint) => { uid: string; ip: string } | undefined,
): OrigDstStats {
  try {
    const raw = binding.mapLookup(maps.stats, u32(0));
    if (!raw) throw new Error('nm_stats has no entry 0');
    const counters = decodeStats(raw);
    const pods: OrigDstStats['pods'] = [];
    // At most one entry per pod of the node (4096); read at a scrape, never per connection.
    for (let k = binding.mapNextKey(maps.podConns, null); k; k = binding.mapNextKey(maps.podConns, k)) {
      const v = binding.mapLookup(maps.podConns, k);
      if (!v) continue; // removed meanwhile
      const cookie = readU64At(k);
      const owner = ownerOf(cookie);
      pods.push({ netnsCookie: cookie.toString(), ...(owner ? { uid: owner.uid, ip: owner.ip } : {}), ...decodePodConns(v) });
    }
    return {
      capacity: limits.capacity,
      podQuota: limits.podQuota,
      entries: Math.max(0, counters.established - counters.closed),
      counters,
      pods,
    };
  } catch (err) {
    throw nativeFailure('NM_ERR_NATIVE', 'reading the original-destination counters (nm_stats, nm_pod_conns)', err);
  }
}
