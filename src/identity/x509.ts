// The one place that loads the X.509 library (@peculiar/x509 over Node's WebCrypto): ECDSA
// P-256 keys, PKCS#10 requests, certificate issuing, and PEM helpers.
// tsyringe (used by @peculiar/x509) needs a Reflect metadata polyfill loaded first.
import 'reflect-metadata';
import { X509Certificate as NodeX509, webcrypto } from 'node:crypto';
import * as x509 from '@peculiar/x509';

// Node's WebCrypto is the provider; its types differ from the DOM ones the library declares.
x509.cryptoProvider.set(webcrypto as never);

export { x509 };

export const EC_ALG = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;

export type KeyPair = webcrypto.CryptoKeyPair;
export type PrivateKey = webcrypto.CryptoKey;

export async function generateKeyPair(): Promise<KeyPair> {
  return (await webcrypto.subtle.generateKey(EC_ALG, true, ['sign', 'verify'])) as KeyPair;
}

function pem(label: string, der: ArrayBuffer): string {
  const b64 = Buffer.from(der).toString('base64').replace(/(.{64})/g, '$1\n').replace(/\n$/, '');
  return `-----BEGIN ${label}-----\n${b64}\n-----END ${label}-----\n`;
}

/** PKCS#8 PEM of a private key (what Node's tls module reads). */
export async function exportPrivateKeyPem(key: PrivateKey): Promise<string> {
  return pem('PRIVATE KEY', await webcrypto.subtle.exportKey('pkcs8', key));
}

export async function importPrivateKeyPem(keyPem: string): Promise<PrivateKey> {
  const b64 = keyPem.replace(/-----(BEGIN|END) PRIVATE KEY-----/g, '').replace(/\s+/g, '');
  return webcrypto.subtle.importKey('pkcs8', Buffer.from(b64, 'base64'), EC_ALG, true, ['sign']);
}

/** A PKCS#10 request whose only subject is the URI SAN (a SPIFFE ID). */
export async function createCsr(keys: KeyPair, uriSan: string): Promise<string> {
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({
    keys: keys as never,
    signingAlgorithm: EC_ALG,
    extensions: [new x509.SubjectAlternativeNameExtension([{ type: 'url', value: uriSan }], true)],
  });
  return csr.toString('pem') + '\n';
}

/** Splits a PEM bundle into its certificates (each ending in a newline). */
export function splitPem(bundle: string): string[] {
  return (bundle.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? []).map((s) => s + '\n');
}

export interface CertSummary {
  subject: string;
  issuer: string;
  serialNumber: string;
  /** e.g. ["URI:spiffe://cluster.local/ns/a/sa/b"] */
  subjectAltNames: string[];
  notBefore: Date;
  notAfter: Date;
  fingerprint256: string;
}

/** What an operator may see of a certificate (never key material). */
export function summarizeCert(certPem: string): CertSummary {
  const c = new NodeX509(certPem);
  return {
    subject: c.subject,
    issuer: c.issuer,
    serialNumber: c.serialNumber,
    subjectAltNames: (c.subjectAltName ?? '').split(/,\s*/).filter(Boolean),
    notBefore: new Date(c.validFrom),
    notAfter: new Date(c.validTo),
    fingerprint256: c.fingerprint256,
  };
}

/** Whether `leafPem` was signed by `issuerPem`. */
export function isSignedBy(leafPem: string, issuerPem: string): boolean {
  const leaf = new NodeX509(leafPem);
  const issuer = new NodeX509(issuerPem);
  return leaf.checkIssued(issuer) && leaf.verify(issuer.publicKey);
}
