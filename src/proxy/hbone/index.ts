// HBONE: HTTP/2 CONNECT over mutual TLS on port 15008, the mesh's node-to-node tunnel. What the
// rest of proxy/ uses: the outbound pool, the inbound server, and the settings they share.
export { HbonePool, type HboneSessionInfo } from './pool.js';
export { HboneServer, type InboundDecision, type InboundRejection, type InboundRequest } from './server.js';
export type { HboneCredentials } from './tls.js';
export { DEFAULT_TUNING, NODE_DEFAULT_TUNING, type HboneTuning } from './tuning.js';
export { formatAuthority, newTraceparent } from './headers.js';
