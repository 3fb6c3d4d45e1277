// Typed views of the core Kubernetes resources nodemesh reads, plus where each came from.

export interface SourcePos {
  file: string;
  /** 1-based line of the document's first line. */
  line: number;
  /**
   * The object is the last good version from an earlier text of the file, kept while the file
   * has errors: its lines are that text's, not the file's current one.
   */
  kept?: boolean;
}

export interface ObjectMeta {
  name: string;
  namespace: string;
  uid: string;
  labels: Record<string, string>;
  annotations: Record<string, string>;
}

/** Any resource, as parsed: the raw object plus identity and position. */
export interface K8sObject {
  apiVersion: string;
  kind: string;
  metadata: ObjectMeta;
  raw: Record<string, unknown>;
  source: SourcePos;
}

export interface ContainerSpec {
  name: string;
  command: string[];
  args: string[];
  env: Record<string, string>;
  ports: { containerPort: number; name?: string; protocol: string }[];
}

export interface Pod extends K8sObject {
  kind: 'Pod';
  spec: {
    nodeName?: string;
    serviceAccountName: string;
    containers: ContainerSpec[];
  };
  /** `status.podIP` when the file pins one. */
  requestedIp?: string;
}

export interface ServicePort {
  name?: string;
  port: number;
  targetPort: number | string;
  protocol: string;
  appProtocol?: string;
}

export interface Service extends K8sObject {
  kind: 'Service';
  spec: {
    clusterIP?: string;
    selector: Record<string, string>;
    ports: ServicePort[];
  };
}

export interface Namespace extends K8sObject {
  kind: 'Namespace';
}

export interface ServiceAccount extends K8sObject {
  kind: 'ServiceAccount';
}

/** The label that opts a pod (or all pods of a namespace) into the mesh. */
export const DATAPLANE_MODE_LABEL = 'nodemesh.io/dataplane-mode';
export const DATAPLANE_MODE_AMBIENT = 'ambient';
