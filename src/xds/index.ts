// xDS, the wire: the .proto files (./proto), the delta ADS client and server, the codecs that
// turn resources into state/ types, and the CA and pod-status clients' channel.
export { handleAddresses, handleAuthorizations, XdsClient } from './client.js';
export type { NackEvent, Rejection, ResourceHandler, ResourceUpdate, XdsClientOptions } from './client.js';
export { addressFromProto, authorizationFromProto, serviceFromProto, workloadFromProto } from './convert.js';
export { authMetadata, channelCredentials, channelOptions, CONTROL_PLANE_DNS_NAME, controlPlaneClient, NODE_HEADER, readTokenFile } from './credentials.js';
export type { ControlPlaneConnection } from './credentials.js';
export { PodStatusClient } from './podstatus.js';
export type { PodPhase, PodStatus } from './podstatus.js';
export { adsService, caService, codecs, fromStruct, podStatusService, protoRoot, toStruct, TYPE_ADDRESS, TYPE_AUTHORIZATION } from './proto.js';
export type * from './proto.js';
export { resourceVersion, XdsServer } from './server.js';
export type { EncodedResource, NackRecord, RequestEvent, StreamInfo, XdsServerOptions } from './server.js';
