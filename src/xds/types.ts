// The data plane's view of xDS resources after validation: workloads and services with IPs as
// strings, policies in the rbac model.
export type { Authorization } from '../rbac/types.js';

export type TunnelProtocol = 'NONE' | 'HBONE';
export type WorkloadStatus = 'HEALTHY' | 'UNHEALTHY';
export type WorkloadType = 'DEPLOYMENT' | 'CRONJOB' | 'POD' | 'JOB';
export type AppProtocol = 'UNKNOWN' | 'HTTP11' | 'HTTP2' | 'GRPC' | 'TCP' | 'TLS';

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
