// The shared proxy: listeners in pod namespaces, outbound routing, inbound authorization,
// the relay, upstream sockets, load balancing.
export { NodeProxy, HBONE_PORT, INBOUND_PORT, OUTBOUND_PORT, type HboneOptions, type NetnsListen, type ProxyOptions } from './proxy.js';
export type { HboneDialer } from './context.js';
export { ConnectionTracker, type ActiveConnection, type AuthzContext, type ConnectionPlan, type ConnectionView, type Telemetry } from './connection.js';
export { relay, type RelayEnd, type RelayResult } from './relay.js';
export { NetnsConnector, PlainConnector, connectFd } from './upstream.js';
export { Balancer, type LbPolicy } from './balancer.js';
export { MESH_PORTS, peerOf, type AuthorizeInput, type AuthorizeResult, type Authorizer, type LocalPod, type MeshRouter, type OriginalDstResolver, type RouteTarget, type SocketAddress, type UpstreamConnector, type WorkloadCredentials, type WorkloadIndex, podIdentity } from './types.js';
