// The control plane: config sources, translation to xDS, the CA, node credentials, and the
// server that runs them.
export { CertificateAuthority } from './ca.js';
export { checkConfigDir, formatProblems } from './check.js';
export { ControlPlane, DEFAULT_ADMIN, DEFAULT_LISTEN } from './controlplane.js';
export { AGENT_TOKEN_AUDIENCE, DEFAULT_AGENT_SERVICE_ACCOUNT } from './kube-auth.js';
export { loadOrCreateNodeSecret, mintNodeToken, readNodeSecret } from './node-credentials.js';
