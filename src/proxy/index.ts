// The shared L4 proxy: listeners in pod namespaces, connection relay, upstream sockets.
export { NodeProxy, INBOUND_PORT, OUTBOUND_PORT, type NetnsListen, type ProxyOptions } from './proxy.js';
export { ConnectionTracker, type ActiveConnection, type ConnectionPlan, type Telemetry } from './connection.js';
export { relay, type RelayResult } from './relay.js';
export { NetnsConnector, PlainConnector, connectFd } from './upstream.js';
export { MESH_PORTS, peerOf, type AuthorizeInput, type AuthorizeResult, type Authorizer, type LocalPod, type OriginalDstResolver, type SocketAddress, type UpstreamConnector, type WorkloadIndex } from './types.js';
