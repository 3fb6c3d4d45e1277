// The one table of well-known ports: Istio ambient's conventions (DESIGN.md, Ports), plus the
// control plane's. Every listener, default and help text takes its number from here.

export const PORTS = {
  /** Agent admin (/config_dump, /debug/flows), 127.0.0.1 on the node. */
  admin: 15000,
  /** Outbound capture, 127.0.0.1 in each enrolled pod's netns. */
  outbound: 15001,
  /** Inbound plaintext, in each enrolled pod's netns. */
  inbound: 15006,
  /** Inbound HBONE (mTLS HTTP/2 CONNECT), in each enrolled pod's netns. */
  hbone: 15008,
  /** Control plane gRPC: xDS, CA, pod status. */
  controlPlane: 15012,
  /** Control plane HTTP admin and readiness. */
  controlPlaneAdmin: 15014,
  /** Prometheus metrics. */
  metrics: 15020,
  /** Readiness, /healthz/ready. */
  ready: 15021,
  /** DNS proxy (reserved). */
  dns: 15053,
  /**
   * The Kubernetes API as `nodemesh up --kubeconfig` offers it on the simulated cluster network
   * (a relay to the kubeconfig's server), kube-apiserver's usual port.
   */
  kubeApi: 6443,
} as const;

export const OUTBOUND_PORT = PORTS.outbound;
export const INBOUND_PORT = PORTS.inbound;
export const HBONE_PORT = PORTS.hbone;

/** Ports the mesh owns inside every pod; traffic addressed to them is never relayed. */
export const MESH_PORTS: ReadonlySet<number> = new Set([PORTS.admin, PORTS.outbound, PORTS.inbound, PORTS.hbone, PORTS.metrics, PORTS.ready]);

/** `host:port` with a well-known port, e.g. hostPort('127.0.0.1', PORTS.admin). */
export function hostPort(host: string, port: number): string {
  return `${host}:${port}`;
}
