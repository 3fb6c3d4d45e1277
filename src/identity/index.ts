// Workload identity: SPIFFE IDs, per-identity keys and certificates from the CA, rotation.
export { CaClient } from './ca-client.js';
export type { CertificateSigner } from './ca-client.js';
export { SecretManager } from './secrets.js';
export type { Secret, SecretInfo, SecretManagerOptions } from './secrets.js';
export { formatSpiffeId, parseSpiffeId, principalOf, tryParseSpiffeId } from './spiffe.js';
export type { SpiffeId } from './spiffe.js';
export { createCsr, exportPrivateKeyPem, generateKeyPair, importPrivateKeyPem, isSignedBy, splitPem, summarizeCert } from './x509.js';
export type { CertSummary, KeyPair } from './x509.js';
