// Workload identity: SPIFFE IDs, per-identity keys and certificates from the CA, rotation.
export { CaClient } from './ca-client.js';
export { SecretManager } from './secrets.js';
export { SecretStore } from './secret-store.js';
export { formatSpiffeId, parseSpiffeId, principalOf, tryParseSpiffeId } from './spiffe.js';
export type { SpiffeId } from './spiffe.js';
export { createCsr, EC_ALG, exportPrivateKeyPem, generateKeyPair, importPrivateKeyPem, x509 } from './x509.js';
export type { PrivateKey } from './x509.js';
