// Fakes the mesh CA for tests: a throwaway root (optionally with an intermediate) that issues
// SPIFFE leaf certificates in memory, so TLS suites need neither a control plane nor files.
// It fakes the CA only: the certificates are real X.509 (ECDSA P-256, the same extensions the
// control plane's CA writes) and the TLS under test is Node's real TLS.
import { randomBytes } from 'node:crypto';
import { EC_ALG, exportPrivateKeyPem, generateKeyPair, x509, type KeyPair } from '../../src/identity/x509.js';

export interface TestCert {
  /** Leaf first, then the intermediate when the CA has one. */
  certChainPem: string;
  keyPem: string;
  /** The root to trust (what a mesh member gets as its trust anchors). */
  rootsPem: string;
}

export interface LeafOptions {
  /** URI SANs; a SPIFFE ID for a workload certificate. Default: none. */
  uris?: string[];
  dns?: string[];
  notBefore?: Date;
  notAfter?: Date;
}

export interface TestCa {
  rootPem: string;
  /** Issues a leaf; a string is shorthand for `{ uris: [string] }`. */
  issue(o: string | LeafOptions): Promise<TestCert>;
}

function serial(): string {
  const b = randomBytes(16);
  b[0]! &= 0x7f;
  return b.toString('hex');
}

const pem = (c: x509.X509Certificate): string => c.toString('pem') + '\n';

/** A new root CA (and intermediate, if asked) whose keys live only in this process. */
export async function createTestCa(o: { name?: string; intermediate?: boolean } = {}): Promise<TestCa> {
  const name = o.name ?? 'nodemesh test root';
  const now = Date.now();
  const rootKeys = await generateKeyPair();
  const root = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: serial(),
    name: `CN=${name}`,
    notBefore: new Date(now - 60_000),
    notAfter: new Date(now + 86_400_000),
    keys: rootKeys as never,
    signingAlgorithm: EC_ALG,
    extensions: [
      new x509.BasicConstraintsExtension(true, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(rootKeys.publicKey as never),
    ],
  });
  let issuer: { cert: x509.X509Certificate; keys: KeyPair } = { cert: root, keys: rootKeys };
  let chainTail = '';
  if (o.intermediate) {
    const keys = await generateKeyPair();
    const cert = await x509.X509CertificateGenerator.create({
      serialNumber: serial(),
      subject: `CN=${name} intermediate`,
      issuer: root.subject,
      notBefore: new Date(now - 60_000),
      notAfter: new Date(now + 86_400_000),
      signingAlgorithm: EC_ALG,
      publicKey: keys.publicKey as never,
      signingKey: rootKeys.privateKey as never,
      extensions: [
        new x509.BasicConstraintsExtension(true, 0, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
        await x509.SubjectKeyIdentifierExtension.create(keys.publicKey as never),
        await x509.AuthorityKeyIdentifierExtension.create(root),
      ],
    });
    issuer = { cert, keys };
    chainTail = pem(cert);
  }
  const rootPem = pem(root);

  return {
    rootPem,
    async issue(arg) {
      const lo: LeafOptions = typeof arg === 'string' ? { uris: [arg] } : arg;
      const keys = await generateKeyPair();
      const names = [...(lo.uris ?? []).map((value) => ({ type: 'url' as const, value })), ...(lo.dns ?? []).map((value) => ({ type: 'dns' as const, value }))];
      const leaf = await x509.X509CertificateGenerator.create({
        serialNumber: serial(),
        // Like the mesh CA: identity only in the SAN, which is then critical.
        subject: '',
        issuer: issuer.cert.subject,
        notBefore: lo.notBefore ?? new Date(Date.now() - 60_000),
        notAfter: lo.notAfter ?? new Date(Date.now() + 3_600_000),
        signingAlgorithm: EC_ALG,
        publicKey: keys.publicKey as never,
        signingKey: issuer.keys.privateKey as never,
        extensions: [
          new x509.BasicConstraintsExtension(false, undefined, true),
          new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyEncipherment, true),
          new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth]),
          ...(names.length ? [new x509.SubjectAlternativeNameExtension(names, true)] : []),
          await x509.AuthorityKeyIdentifierExtension.create(issuer.cert),
        ],
      });
      return { certChainPem: pem(leaf) + chainTail, keyPem: await exportPrivateKeyPem(keys.privateKey), rootsPem: rootPem };
    },
  };
}
