// The typed surface of in-pod redirection: what the agent and proxy may ask of the eBPF
// programs and the native addon. src/redirect/ is the only code that loads the binding.

/** What the kernel side needs to capture one pod. */
export interface PodRedirectSpec {
  /** Pod UID; names the pin directory `<pinRoot>/pods/<uid>/`. */
  uid: string;
  /** Absolute path of the pod's cgroup v2 directory (connect/sockops/getpeername hooks). */
  cgroupPath: string;
  /** Path of the pod's network namespace (`/run/netns/x` or `/proc/<pid>/ns/net`); sk_lookup. */
  netnsPath: string;
  /** The pod's IPv4 address. */
  ip: string;
  /** Destination ports never captured outbound (at most 8). */
  excludeOutboundPorts?: number[];
  /** Destination CIDRs never captured outbound, e.g. "10.96.0.0/12" (at most 8). */
  excludeOutboundCidrs?: string[];
  /** Local ports never steered inbound, e.g. health probes (at most 8). */
  excludeInboundPorts?: number[];
}

/** Which of a pod's inbound listeners an sk_lookup steer targets. */
export type InboundKind = 'plaintext' | 'hbone';

export interface SocketAddress {
  ip: string;
  port: number;
}

export interface ListenOptions {
  host: string;
  port: number;
  backlog?: number;
  reusePort?: boolean;
}

export interface PodAttachment {
  uid: string;
  /** Names of the links pinned for this pod, e.g. ['connect4','connect6','sockops',...]. */
  links: string[];
}
