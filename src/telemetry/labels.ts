// Istio's standard TCP metric labels, built from the two workloads of a connection, so that
// existing Istio dashboards and alerts work unchanged on nodemesh.

/** What telemetry needs to know of one end of a connection. */
export interface PeerInfo {
  workload?: string;
  namespace?: string;
  /** SPIFFE identity without the scheme, e.g. `cluster.local/ns/default/sa/web`. */
  principal?: string;
  app?: string;
  version?: string;
  canonicalService?: string;
  canonicalRevision?: string;
  cluster?: string;
}

export type Reporter = 'source' | 'destination';

export const TCP_LABELS = [
  'reporter',
  'source_workload',
  'source_workload_namespace',
  'source_principal',
  'source_app',
  'source_version',
  'source_canonical_service',
  'source_canonical_revision',
  'source_cluster',
  'destination_workload',
  'destination_workload_namespace',
  'destination_principal',
  'destination_app',
  'destination_version',
  'destination_service',
  'destination_service_name',
  'destination_service_namespace',
  'destination_canonical_service',
  'destination_canonical_revision',
  'destination_cluster',
  'request_protocol',
  'response_flags',
  'connection_security_policy',
] as const;

export type TcpLabelName = (typeof TCP_LABELS)[number];
export type TcpLabels = Record<TcpLabelName, string>;

const UNKNOWN = 'unknown';

export interface ConnectionLabelInput {
  reporter: Reporter;
  source: PeerInfo;
  destination: PeerInfo;
  /** Service hostname when the destination was a Service, else the destination address. */
  destinationService?: string;
  destinationServiceName?: string;
  destinationServiceNamespace?: string;
  /** Envoy-style response flags: '-' for none, 'DENY', 'UF' (upstream failure), 'NR' ... */
  responseFlags?: string;
  /** 'mutual_tls' across HBONE, 'none' for plaintext. */
  securityPolicy?: 'mutual_tls' | 'none' | 'unknown';
}

export function tcpLabels(i: ConnectionLabelInput): TcpLabels {
  const s = i.source;
  const d = i.destination;
  return {
    reporter: i.reporter,
    source_workload: s.workload ?? UNKNOWN,
    source_workload_namespace: s.namespace ?? UNKNOWN,
    source_principal: s.principal ? `spiffe://${s.principal}` : UNKNOWN,
    source_app: s.app ?? UNKNOWN,
    source_version: s.version ?? UNKNOWN,
    source_canonical_service: s.canonicalService ?? s.workload ?? UNKNOWN,
    source_canonical_revision: s.canonicalRevision ?? 'latest',
    source_cluster: s.cluster ?? 'Kubernetes',
    destination_workload: d.workload ?? UNKNOWN,
    destination_workload_namespace: d.namespace ?? UNKNOWN,
    destination_principal: d.principal ? `spiffe://${d.principal}` : UNKNOWN,
    destination_app: d.app ?? UNKNOWN,
    destination_version: d.version ?? UNKNOWN,
    destination_service: i.destinationService ?? UNKNOWN,
    destination_service_name: i.destinationServiceName ?? UNKNOWN,
    destination_service_namespace: i.destinationServiceNamespace ?? UNKNOWN,
    destination_canonical_service: d.canonicalService ?? d.workload ?? UNKNOWN,
    destination_canonical_revision: d.canonicalRevision ?? 'latest',
    destination_cluster: d.cluster ?? 'Kubernetes',
    request_protocol: 'tcp',
    response_flags: i.responseFlags ?? '-',
    connection_security_policy: i.securityPolicy ?? 'unknown',
  };
}

/** One peer's share of a cache key: every field tcpLabels reads, an absent one kept apart from ''. */
function peerKey(p: PeerInfo): string {
  return `${part(p.workload)}${part(p.namespace)}${part(p.principal)}${part(p.app)}${part(p.version)}${part(p.canonicalService)}${part(p.canonicalRevision)}${part(p.cluster)}`;
}

function part(v: string | undefined): string {
  return v === undefined ? '-\u0000' : `+${v}\u0000`;
}

/**
 * Label sets by what decides them, so the connections between the same two workloads share one
 * frozen object: the metrics count by its identity (metrics.ts), with no label hashing per
 * connection. Keyed by every input tcpLabels reads, so a workload whose labels change gets a new
 * set at once; bounded (the oldest entry goes first), and a set evicted and made again is only
 * a second object for the same series.
 */
export class TcpLabelCache {
  readonly #max: number;
  readonly #sets = new Map<string, TcpLabels>();

  constructor(maxEntries = 4096) {
    if (!Number.isInteger(maxEntries) || maxEntries < 1) throw new RangeError(`maxEntries must be a positive integer, got ${maxEntries}`);
    this.#max = maxEntries;
  }

  get size(): number {
    return this.#sets.size;
  }

  get(i: ConnectionLabelInput): TcpLabels {
    const key = `${i.reporter}\u0000${part(i.responseFlags)}${part(i.securityPolicy)}${part(i.destinationService)}${part(i.destinationServiceName)}${part(i.destinationServiceNamespace)}${peerKey(i.source)}${peerKey(i.destination)}`;
    let l = this.#sets.get(key);
    if (l === undefined) {
      if (this.#sets.size >= this.#max) this.#sets.delete(this.#sets.keys().next().value!);
      l = Object.freeze(tcpLabels(i));
      this.#sets.set(key, l);
    }
    return l;
  }

  clear(): void {
    this.#sets.clear();
  }
}
