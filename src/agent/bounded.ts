// What the agent keeps bounded, and shows of it: a workload identity's key and certificate are
// forgotten, in memory and on disk, once no pod of the node has that identity; the kernel's
// node-wide original-destination maps are exported as metrics and in /config_dump.
import type { SecretManager } from '../identity/index.js';
import type { Logger } from '../log.js';
import type { OrigDstStats, Redirector } from '../redirect/index.js';
import type { OrigDstMetrics } from '../telemetry/index.js';
import type { EnrolledPod, Enroller } from './enrollment.js';

/** The SPIFFE ID a pod's connections carry. */
export function identityOf(p: Pick<EnrolledPod, 'trustDomain' | 'namespace' | 'serviceAccount'>): string {
  return `spiffe://${p.trustDomain}/ns/${p.namespace}/sa/${p.serviceAccount}`;
}

/**
 * Forgets every workload secret that no pod of the node has: not this agent's enrolled or
 * pending pods, and not any pod record on disk (an agent beside this one, during an upgrade,
 * may serve pods this one does not). Returns the identities forgotten.
 */
export function pruneIdentities(secrets: Pick<SecretManager, 'retain'>, enroller: Pick<Enroller, 'pods' | 'pendingPods' | 'recorded'>, log: Logger): string[] {
  const keep = new Set([...enroller.pods(), ...enroller.pendingPods(), ...enroller.recorded()].map(identityOf));
  const gone = secrets.retain(keep);
  if (gone.length) log.info({ identities: gone }, 'forgot the certificates of identities no pod of this node has any more');
  return gone;
}

/** The Redirector's counts with each pod named `ns/name` (`netns:<cookie>` when unknown). */
export function origDstMetrics(s: OrigDstStats, podName: (uid: string) => string | undefined): OrigDstMetrics {
  return {
    capacity: s.capacity,
    podQuota: s.podQuota,
    entries: s.entries,
    recordFailures: s.counters.recordFailed,
    quotaRefusals: s.counters.quotaRefused,
    evictions: { nm_cookie_dst: s.counters.evictedCookie, nm_orig_dst: s.counters.evictedOrig },
    pods: s.pods.map((p) => ({ pod: (p.uid !== undefined ? podName(p.uid) : undefined) ?? `netns:${p.netnsCookie}`, entries: p.entries, refused: p.refused })),
  };
}

export type OrigDstView = OrigDstMetrics & { counters: OrigDstStats['counters'] };

/** What the kernel counts now, or undefined (no redirector open, or it could not be read: logged). */
export function readOrigDst(redirect: Redirector | undefined, enroller: Pick<Enroller, 'get'> | undefined, log: Logger): OrigDstView | undefined {
  if (!redirect || redirect.closed) return undefined;
  try {
    const s = redirect.origDstStats();
    const name = (uid: string): string | undefined => {
      const p = enroller?.get(uid);
      return p ? `${p.namespace}/${p.name}` : undefined;
    };
    return { ...origDstMetrics(s, name), counters: s.counters };
  } catch (err) {
    log.warn({ err }, 'cannot read the original-destination counters');
    return undefined;
  }
}
