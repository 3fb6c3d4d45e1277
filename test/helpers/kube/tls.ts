// The stand-in's TLS material, made at start: a throwaway CA and a serving certificate for
// 127.0.0.1 (and the in-cluster names), ECDSA P-256 via the project's X.509 helpers.
import { randomBytes } from 'node:crypto';
import { EC_ALG, exportPrivateKeyPem, generateKeyPair, x509 } from '../../../src/identity/index.js';

export interface ServingTls { caPem: string; certPem: string; keyPem: string }

const serial = (): string => { const b = randomBytes(16); b[0]! &= 0x7f; return b.toString('hex'); };

export async function makeServingTls(): Promise<ServingTls> {
  const now = Date.now();
  const caKeys = await generateKeyPair();
  const ca = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: serial(), name: 'CN=kubernetes stand-in CA', notBefore: new Date(now - 60_000), notAfter: new Date(now + 86_400_000),
    keys: caKeys as never, signingAlgorithm: EC_ALG,
    extensions: [
      new x509.BasicConstraintsExtension(true, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(caKeys.publicKey as never),
    ],
  });
  const keys = await generateKeyPair();
  const names = ['localhost', 'kubernetes', 'kubernetes.default', 'kubernetes.default.svc', 'kubernetes.default.svc.cluster.local'];
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: serial(), subject: 'CN=kube-apiserver', issuer: ca.subject, notBefore: new Date(now - 60_000), notAfter: new Date(now + 86_400_000),
    signingAlgorithm: EC_ALG, publicKey: keys.publicKey as never, signingKey: caKeys.privateKey as never,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyEncipherment, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth]),
      new x509.SubjectAlternativeNameExtension([{ type: 'ip', value: '127.0.0.1' }, { type: 'ip', value: '10.96.0.1' }, ...names.map((value) => ({ type: 'dns' as const, value }))]),
      await x509.AuthorityKeyIdentifierExtension.create(ca),
    ],
  });
  return { caPem: ca.toString('pem') + '\n', certPem: cert.toString('pem') + '\n', keyPem: await exportPrivateKeyPem(keys.privateKey) };
}
