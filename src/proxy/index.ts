// The shared proxy: listeners in pod namespaces, outbound routing, inbound authorization,
// HBONE, the relay, upstream sockets, load balancing.
export { NodeProxy } from './proxy.js';
export { relay } from './relay.js';
export { NetnsConnector, connectFd } from './upstream.js';
export { Balancer, newCursors, type LbPolicy } from './balancer.js';
export type { AuthorizeInput, AuthorizeResult, LocalPod, MeshRouter, PlaintextSink, PlaintextTap, RouteTarget, SocketAddress, WorkloadCredentials, WorkloadIndex } from './types.js';
export { DEFAULT_TUNING, HbonePool, HboneServer, NODE_DEFAULT_TUNING, type HboneCredentials, type HboneSessionInfo, type HboneTuning } from './hbone/index.js';
export { EndpointPicker } from './http/index.js';
export type { HttpLayerOptions, RequestTelemetry } from './http-layer.js';
export type { RequestAuthenticator } from './http-inbound.js';
