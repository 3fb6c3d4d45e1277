// The data plane's view of xDS resources after validation: workloads and services with IPs as
// strings. Policies are in ./policy.ts.

/*
 * The enum values, written once: the proto's enum names (istio.workload), which the codecs
 * (xds/proto.ts) and the validators (xds/convert.ts) take from here.
 */
export const TUNNEL_PROTOCOLS = ['NONE', 'HBONE'] as const;
export const WORKLOAD_STATUSES = ['HEALTHY', 'UNHEALTHY'] as const;
export const WORKLOAD_TYPES = ['DEPLOYMENT', 'CRONJOB', 'POD', 'JOB'] as const;
export const APP_PROTOCOLS = ['UNKNOWN', 'HTTP11', 'HTTP2', 'GRPC', 'TCP', 'TLS'] as const;

export type TunnelProtocol = (typeof TUNNEL_PROTOCOLS)[number];
export type WorkloadStatus = (typeof WORKLOAD_STATUSES)[number];
export type WorkloadType = (typeof WORKLOAD_TYPES)[number];
export type AppProtocol = (typeof APP_PROTOCOLS)[number];

export interface ServicePort {
  servicePort: number;
  /** 0 when the service names its target port and each workload resolves it. */
  targetPort: number;
  appProtocol: AppProtocol;
}

export interface Workload {
  uid: string;
  name: string;
  namespace: string;
  addresses: string[];
  network: string;
  tunnelProtocol: TunnelProtocol;
  trustDomain: string;
  serviceAccount: string;
  /** spiffe://<trustDomain>/ns/<namespace>/sa/<serviceAccount> */
  identity: string;
  node: string;
  canonicalName: string;
  canonicalRevision: string;
  workloadType: WorkloadType;
  workloadName: string;
  /** `ns/name` of the WORKLOAD_SELECTOR policies that select this workload. */
  authorizationPolicies: string[];
  status: WorkloadStatus;
  clusterId: string;
  /** `ns/hostname` → ports of the services this workload backs. */
  services: Record<string, ServicePort[]>;
  /** nodemesh's extension: the pod's labels, for DestinationRule subsets and RequestAuthentication selectors. */
  labels: Record<string, string>;
}

export interface Service {
  name: string;
  namespace: string;
  hostname: string;
  /** `ns/hostname`: the resource name. */
  key: string;
  vips: { network: string; address: string }[];
  ports: ServicePort[];
  subjectAltNames: string[];
}

/** One decoded istio.workload.Address: a workload or a service. */
export type AddressResource = { kind: 'workload'; workload: Workload } | { kind: 'service'; service: Service };
