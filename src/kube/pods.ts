// Which Pods from the API are mesh workloads at all, by istiod's ambient rules, and the IPv4
// address the mesh knows a Pod by: one rule for the control plane's translation and the
// agent's pod watch, so a pod the one skips the other never captures.
import { isRecord } from '../k8s/index.js';
import { isIPv4 } from '../net/index.js';

type Raw = Record<string, unknown>;
const rec = (v: unknown): Raw => (isRecord(v) ? v : {});

/**
 * Whether istiod's ambient index makes a workload of this Pod: not hostNetwork (it shares the
 * node's address), and Running or Pending (a Pending pod with an IP is initialising; see
 * istio/istio#48854). A pod without a phase yet is Pending. Undefined when it is one.
 */
export function podSkipReason(raw: Raw): string | undefined {
  if (rec(raw.spec).hostNetwork === true) return 'hostNetwork';
  const phase = rec(raw.status).phase ?? 'Pending';
  if (phase !== 'Running' && phase !== 'Pending') return `phase ${String(phase)}`;
  return undefined;
}

/** The pod's IPv4 address: `status.podIP`, or the IPv4 one of `status.podIPs` (dual stack). */
export function podIpv4(raw: Raw): string | undefined {
  const status = rec(raw.status);
  if (typeof status.podIP === 'string' && isIPv4(status.podIP)) return status.podIP;
  return (Array.isArray(status.podIPs) ? status.podIPs : []).map((p) => rec(p).ip).find((ip): ip is string => typeof ip === 'string' && isIPv4(ip));
}
