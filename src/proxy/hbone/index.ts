// HBONE: HTTP/2 CONNECT over mutual TLS on port 15008, the mesh's node-to-node tunnel.
export { HbonePool, type HboneConnectRequest, type HbonePoolOptions, type HboneSessionInfo, type HboneSource } from './client.js';
export { HboneServer, type HboneServerOptions, type HboneServerStats, type InboundDecision, type InboundRejection, type InboundRelay, type InboundRequest, type InboundStatus } from './server.js';
export { HboneStream } from './stream.js';
export type { HboneCredentials } from './tls.js';
export { DEFAULT_TUNING, NODE_DEFAULT_TUNING, type HboneTuning } from './tuning.js';
export { DENY_POLICY_HEADER, formatAuthority, formatForwarded, isValidTraceparent, newTraceparent, parseAuthority, parseForwardedFor } from './headers.js';
