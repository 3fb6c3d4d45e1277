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
  /**
   * Let inbound SYNs for this pod through to the app when the agent has no listener,
   * instead of dropping them. Off by default: the mesh fails closed. For debugging only.
   */
  inboundFailOpen?: boolean;
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

/** How `Redirector.open` finds and loads the programs. */
export interface RedirectorOptions {
  /**
   * The bpffs directory the agent owns, e.g. `/sys/fs/bpf/nodemesh`. Maps are pinned under
   * `<pinRoot>/maps`, per-pod links under `<pinRoot>/pods/<uid>/`.
   */
  pinRoot: string;
  /** The compiled programs; default `<package root>/bpf/build/redirect.bpf.o`. */
  objectPath?: string;
  /** Where connect4/connect6 send captured connects (127.0.0.1:<port>); default 15001. */
  outboundPort?: number;
  /** Inbound connections to this port go to the HBONE listener; default 15008. */
  hbonePort?: number;
  /**
   * Captured connections one pod may hold open at once; beyond it its new captured connects
   * fail with EPERM, so one pod cannot exhaust the node-wide original-destination maps.
   * Default 16384 (a quarter of the maps); 0 turns the quota off.
   */
  origDstPodQuota?: number;
}

/** Options of `socketInNetns` and `socketsInNetns`. */
export interface NetnsSocketOptions {
  /** Local address to bind (port chosen at connect time); its family decides the socket's. */
  bindIp?: string;
  /** 4 (default) or 6, when no bindIp is given. */
  family?: 4 | 6;
  /**
   * A delivery socket (socketsInNetns only): IPv4, IP_TRANSPARENT, SO_MARK =
   * INBOUND_DELIVERY.mark, bound to lo, and left unbound so the caller binds the client's IP
   * (`connect({ localAddress })`). Needs the pod's delivery routing (installDeliveryRouting).
   */
  transparent?: boolean;
}

/**
 * Inbound delivery with the client's address kept (docs/redirect.md "Inbound delivery"):
 * the agent's delivery sockets carry `mark`; in each enrolled pod's netns a rule at
 * `rulePriority` sends that mark to `table`, whose one route (`local 0.0.0.0/0 dev lo`)
 * delivers the app's replies back to them. The values are Istio's in-pod ones.
 */
export const INBOUND_DELIVERY = { mark: 0x539, mask: 0xfff, table: 100, rulePriority: 32764 } as const;

/** What installDeliveryRouting found and changed. */
export interface DeliveryRoutingInstalled {
  /** false when the identical rule was already there (a re-install, e.g. adoption). */
  ruleAdded: boolean;
  /** net.ipv4.tcp_fwmark_accept and net.ipv4.fwmark_reflect before the call. */
  previous: { fwmarkAccept: number; fwmarkReflect: number };
}

/** The pinned links of one pod, by name. */
export const POD_LINK_NAMES = ['connect4', 'connect6', 'sockops', 'getpeername4', 'getpeername6', 'sk_lookup'] as const;
export type PodLinkName = (typeof POD_LINK_NAMES)[number];

/**
 * The original-destination maps (nm_cookie_dst, nm_orig_dst) as the kernel counts them: the
 * node's pods share `capacity` entries; each may hold `podQuota` open captured connections.
 */
export interface OrigDstStats {
  capacity: number;
  /** 0: no quota. */
  podQuota: number;
  /** Captured connections established and not closed yet, node-wide. */
  entries: number;
  /** nm_stats, each only ever incremented (bpf/redirect.h). */
  counters: {
    captured: number;
    recordFailed: number;
    quotaRefused: number;
    established: number;
    closed: number;
    evictedCookie: number;
    evictedOrig: number;
    untracked: number;
  };
  /** Per pod netns (nm_pod_conns), named when this process attached the pod. */
  pods: Array<{ netnsCookie: string; uid?: string; ip?: string; entries: number; refused: number }>;
}
