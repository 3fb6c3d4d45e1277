// Kernel events: what the BPF programs saw (connects rewritten or passed, sk_lookup verdicts,
// closes with kernel byte counts), decoded from the ring buffer the addon polls.

/** What happened, and at which hook. */
export type KernelEventKind =
  /** cgroup/connect4|6 rewrote a pod's connect to the agent's outbound listener. */
  | 'connect_redirected'
  /** cgroup/connect4|6 let a connect go where it was going. */
  | 'connect_passed'
  /** sk_lookup steered an inbound SYN to the agent's listener for the pod. */
  | 'lookup_steered'
  /** sk_lookup let an inbound SYN through to the pod itself. */
  | 'lookup_passed'
  /** sk_lookup dropped an inbound SYN (fail closed: enrolled pod, no listener). */
  | 'lookup_dropped'
  /** A TCP socket the programs track closed, with its byte counts from the kernel. */
  | 'close';

/** Why a connect or a lookup was passed or dropped. */
export type KernelEventReason =
  | 'excluded_port'
  | 'excluded_cidr'
  | 'loopback'
  | 'not_enrolled'
  | 'self'
  | 'no_listener'
  | 'ipv6'
  | 'quota'
  | 'observed'
  /** sk_lookup: the agent's own delivery of an inbound connection it accepted (arrives on lo). */
  | 'delivery'
  /** connect refused: nm_cookie_dst could not take the original destination (fail closed). */
  | 'record_failed'
  /** sk_lookup dropped: bpf_sk_assign refused the agent's listener for the pod. */
  | 'assign_failed';

export interface KernelEndpoint {
  ip: string;
  port: number;
}

export interface KernelEvent {
  kind: KernelEventKind;
  reason?: KernelEventReason;
  /** SO_COOKIE of the socket the hook ran for (0n where the hook has none, e.g. a dropped SYN). */
  socketCookie: bigint;
  /** The network namespace cookie of that socket (the pod's netns). */
  netnsCookie: bigint;
  /** Connects: the pod's side; lookups: the SYN's source; closes: the local side. */
  src: KernelEndpoint;
  /** Connects: the destination the app asked for; lookups: the SYN's destination; closes: the remote side. */
  dst: KernelEndpoint;
  /** bpf_ktime_get_ns() at the hook (CLOCK_MONOTONIC, nanoseconds). */
  monotonicNs: bigint;
  /** Closes: bytes this socket sent and received (tcp_sock bytes_acked / bytes_received). */
  bytesSent?: bigint;
  bytesReceived?: bigint;
  /** Whether the socket's pod is enrolled (false: observation only). */
  enrolled: boolean;
  /**
   * connect_passed only: true when the hook refused the connect rather than letting it go
   * (the app's connect() failed at once with EPERM), with reason 'quota', 'record_failed' or
   * 'ipv6'. Absent otherwise.
   */
  refused?: true;
}

/** A batch of events as the addon delivers them, and how many the full ring dropped so far. */
export interface KernelEventBatch {
  events: KernelEvent[];
  /**
   * Events lost so far: those the ring had no room for (nm_events_lost, kept with the pinned
   * maps across agent restarts) plus batches this process dropped because its JS thread was
   * behind. Redirector.kernelEventsLost() reads the same total.
   */
  lostTotal: bigint;
}
