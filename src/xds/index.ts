// xDS, the wire: the .proto files (./proto), the delta ADS client and server, the codecs that
// turn resources into state/ types, and the CA and pod-status clients' channel.
export { XdsClient } from './client.js';
export type { HeldRejection, HeldResource, XdsSnapshot } from './client.js';
export { authorizationFromProto, serviceFromProto, workloadFromProto } from './convert.js';
export { l7RulesToProto } from './convert-authz.js';
export { requestAuthnToProto } from './convert-requestauthn.js';
export { serviceRoutesToProto } from './convert-routes.js';
export { authMetadata, CONTROL_PLANE_DNS_NAME, controlPlaneClient, NODE_HEADER, readTokenFile } from './credentials.js';
export type { ControlPlaneConnection } from './credentials.js';
export { PodStatusClient } from './podstatus.js';
export type { PodStatus } from './podstatus.js';
export { adsService, caService, codecs, podStatusService, protoRoot, TYPE_ADDRESS, TYPE_AUTHORIZATION, TYPE_REQUEST_AUTHN, TYPE_SERVICE_ROUTES } from './proto.js';
export type {
  PbAppProtocol,
  PbAuthorization,
  PbCertificateRequest,
  PbCertificateResponse,
  PbCidr,
  PbDeltaRequest,
  PbDeltaResponse,
  PbMatch,
  PbPodStatus,
  PbPodStatusReply,
  PbPodStatusReport,
  PbPort,
  PbService,
  PbStringMatch,
  PbWorkload,
} from './proto.js';
export { XdsServer } from './server.js';
