// The control plane: config sources, translation to xDS, the CA, and the server that runs them.
export { startAdmin } from './admin.js';
export { loadOrCreateToken, tokenAuthenticator } from './auth.js';
export {
  buildPolicySet,
  convertedPeerAuthentication,
  CONVERTED_PEER_AUTHN_PREFIX,
  effectiveMtls,
  STATIC_STRICT_NAME,
  staticStrictPolicy,
  stringMatch,
  translateAuthorizationPolicy,
} from './authz.js';
export type { AuthorizationTranslation, EffectiveMode, EffectiveMtls, PolicySet } from './authz.js';
export { CertificateAuthority } from './ca.js';
export type { CaOptions } from './ca.js';
export { checkConfigDir, formatProblems } from './check.js';
export type { CheckResult } from './check.js';
export { ControlPlane, DEFAULT_ADMIN, DEFAULT_LISTEN, parseHostPort } from './controlplane.js';
export type { ControlPlaneOptions, ControlPlanePaths } from './controlplane.js';
export { PodStatusStore } from './podstatus.js';
export type * from './resources.js';
export { buildSnapshot, ConfigSource, loadSnapshot } from './sources.js';
export type { ConfigSnapshot, ConfigSourceOptions } from './sources.js';
export {
  appProtocolOf,
  DEFAULT_MESH,
  podPortsFor,
  runningPods,
  serviceHostname,
  serviceKey,
  servicesOf,
  translateService,
  translateWorkload,
  workloadUid,
} from './translate.js';
export type { MeshSettings, ReportedPod, RunningPod, WorkloadInputs } from './translate.js';
export { parseConfigFile } from './validate.js';
export type { ConfigObject, ConfigProblem, ParsedFile, ProblemCode } from './validate.js';
