// Public surface of in-pod redirection: the Redirector (per-pod attach/detach over pinned
// eBPF programs) and sockets made inside a pod's network namespace.
export { Redirector } from './redirector.js';
export { listenInNetns, socketInNetns, socketsInNetns, netnsCookie, netnsCookieOfPath, socketCookie } from './netns.js';
export { findCgroup2Root } from './mounts.js';
export { POD_LINK_NAMES } from './types.js';
export type {
  InboundKind,
  ListenOptions,
  NetnsSocketOptions,
  PodAttachment,
  PodLinkName,
  PodRedirectSpec,
  RedirectorOptions,
  SocketAddress,
} from './types.js';
