// The built-in certificate authority: a self-signed ECDSA P-256 root (generated at first start
// or loaded from files) that signs SPIFFE workload certificates and the control plane's own
// serving certificate. The root key never leaves this module's files.
import { createPrivateKey, createPublicKey, randomBytes, X509Certificate } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { CaRefusal, IdentityError, UsageError } from '../errors.js';
import { EC_ALG, exportPrivateKeyPem, generateKeyPair, importPrivateKeyPem, parseSpiffeId, x509, type PrivateKey, type SpiffeId } from '../identity/index.js';
import { log as rootLog, type Logger } from '../log.js';

export interface CaOptions {
  /** Where a generated root is kept: <stateDir>/root-cert.pem and root-key.pem (0600). */
  stateDir: string;
  trustDomain: string;
  /** Use this root instead of generating one (both or neither). */
  rootCertFile?: string;
  rootKeyFile?: string;
  /** Lifetime of a workload certificate when the request names none (default 24 h). */
  defaultTtlSeconds?: number;
  /** The longest lifetime granted (default 7 days). */
  maxTtlSeconds?: number;
  logger?: Logger;
}

// gRPC status codes used here (grpc-js's `status` enum values).
const INVALID_ARGUMENT = 3;
const PERMISSION_DENIED = 7;

const ROOT_TTL_DAYS = 3650;
/** Allowance for clocks that run a little behind ours. */
const BACKDATE_MS = 60_000;

function serial(): string {
  const b = randomBytes(16);
  b[0]! &= 0x7f; // positive INTEGER
  return b.toString('hex');
}

export class CertificateAuthority {
  readonly trustDomain: string;
  readonly rootCertPem: string;
  /** Where the root certificate is, for agents to trust. */
  readonly rootCertFile: string;
  readonly #rootKey: PrivateKey;
  readonly #root: x509.X509Certificate;
  readonly #opts: CaOptions;
  readonly #log: Logger;

  private constructor(opts: CaOptions, rootCertPem: string, rootCertFile: string, rootKey: PrivateKey, log: Logger) {
    this.#opts = opts;
    this.trustDomain = opts.trustDomain;
    this.rootCertPem = rootCertPem;
    this.rootCertFile = rootCertFile;
    this.#rootKey = rootKey;
    this.#root = new x509.X509Certificate(rootCertPem);
    this.#log = log;
  }

  /** Loads the configured root, or the one in stateDir, or generates and stores a new one. */
  static async open(opts: CaOptions): Promise<CertificateAuthority> {
    const log = (opts.logger ?? rootLog).child({ component: 'ca' });
    if (!/^[a-z0-9._-]+$/.test(opts.trustDomain)) throw new UsageError(`trust domain ${JSON.stringify(opts.trustDomain)} is not valid (lowercase letters, digits, . _ -)`);
    if ((opts.rootCertFile === undefined) !== (opts.rootKeyFile === undefined)) {
      throw new UsageError('give both the root certificate file and the root key file, or neither');
    }
    let certFile = join(opts.stateDir, 'root-cert.pem');
    let keyFile = join(opts.stateDir, 'root-key.pem');
    if (opts.rootCertFile && opts.rootKeyFile) {
      certFile = opts.rootCertFile;
      keyFile = opts.rootKeyFile;
    } else if (!existsSync(certFile) || !existsSync(keyFile)) {
      mkdirSync(opts.stateDir, { recursive: true, mode: 0o700 });
      const keys = await generateKeyPair();
      const now = Date.now();
      const cert = await x509.X509CertificateGenerator.createSelfSigned({
        serialNumber: serial(),
        name: `O=${opts.trustDomain}, CN=nodemesh root CA`,
        notBefore: new Date(now - BACKDATE_MS),
        notAfter: new Date(now + ROOT_TTL_DAYS * 86_400_000),
        keys: keys as never,
        signingAlgorithm: EC_ALG,
        extensions: [
          new x509.BasicConstraintsExtension(true, undefined, true),
          new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign | x509.KeyUsageFlags.digitalSignature, true),
          await x509.SubjectKeyIdentifierExtension.create(keys.publicKey as never),
        ],
      });
      writeFileSync(keyFile, await exportPrivateKeyPem(keys.privateKey), { mode: 0o600 });
      chmodSync(keyFile, 0o600);
      writeFileSync(certFile, cert.toString('pem') + '\n', { mode: 0o644 });
      log.info({ certFile, trustDomain: opts.trustDomain }, 'generated a new root CA');
    }
    let certPem: string;
    let keyPem: string;
    try {
      certPem = readFileSync(certFile, 'utf8');
      keyPem = readFileSync(keyFile, 'utf8');
    } catch (cause) {
      throw new IdentityError('NM_ERR_CA', `cannot read the root CA: ${(cause as Error).message}`, { cause });
    }
    let nodeCert: X509Certificate;
    try {
      nodeCert = new X509Certificate(certPem);
      const fromKey = createPublicKey(createPrivateKey(keyPem)).export({ type: 'spki', format: 'der' });
      if (!fromKey.equals(nodeCert.publicKey.export({ type: 'spki', format: 'der' }))) throw new Error('the key does not belong to the certificate');
      if (!nodeCert.ca) throw new Error('the certificate is not a CA (basicConstraints CA:TRUE missing)');
    } catch (cause) {
      throw new IdentityError('NM_ERR_CA', `root CA ${certFile} / ${keyFile} is unusable: ${(cause as Error).message}`, { cause });
    }
    let key: PrivateKey;
    try {
      key = await importPrivateKeyPem(keyPem);
    } catch (cause) {
      throw new IdentityError('NM_ERR_CA', `root key ${keyFile} must be an ECDSA P-256 PKCS#8 key: ${(cause as Error).message}`, { cause });
    }
    return new CertificateAuthority(opts, certPem.endsWith('\n') ? certPem : certPem + '\n', certFile, key, log);
  }

  /**
   * Signs a CSR whose only URI SAN is a SPIFFE ID of this trust domain, after `authorize`
   * accepted that identity. Returns the chain leaf first, root last. Throws CaRefusal.
   */
  async sign(csrPem: string, ttlSeconds: number, authorize: (id: SpiffeId) => string | undefined): Promise<string[]> {
    let csr: x509.Pkcs10CertificateRequest;
    try {
      csr = new x509.Pkcs10CertificateRequest(csrPem);
    } catch (e) {
      throw new CaRefusal(`the CSR is not a valid PEM PKCS#10 request: ${(e as Error).message}`, INVALID_ARGUMENT);
    }
    if (!(await csr.verify())) throw new CaRefusal('the CSR signature does not verify', INVALID_ARGUMENT);
    const sanRaw = csr.getExtension('2.5.29.17');
    const san = sanRaw ? new x509.SubjectAlternativeNameExtension(sanRaw.rawData) : undefined;
    const uris = (san?.names.items ?? []).filter((n) => n.type === 'url').map((n) => n.value);
    if (uris.length !== 1) throw new CaRefusal(`the CSR must carry exactly one URI SAN (a SPIFFE ID), found ${uris.length}`, INVALID_ARGUMENT);
    const uri = uris[0]!;
    let id: SpiffeId;
    try {
      id = parseSpiffeId(uri);
    } catch (e) {
      throw new CaRefusal((e as Error).message, INVALID_ARGUMENT);
    }
    if (id.trustDomain !== this.trustDomain) throw new CaRefusal(`${uri} is not in trust domain ${this.trustDomain}`, PERMISSION_DENIED);
    const refusal = authorize(id);
    if (refusal) throw new CaRefusal(`${uri}: ${refusal}`, PERMISSION_DENIED);
    const max = this.#opts.maxTtlSeconds ?? 7 * 86_400;
    const ttl = Math.min(ttlSeconds > 0 ? ttlSeconds : (this.#opts.defaultTtlSeconds ?? 86_400), max);
    const now = Date.now();
    const leaf = await x509.X509CertificateGenerator.create({
      serialNumber: serial(),
      // Workload certificates carry their identity only in the SAN, which is then critical.
      subject: '',
      issuer: this.#root.subject,
      notBefore: new Date(now - Math.min(BACKDATE_MS, (ttl * 1000) / 10)),
      notAfter: new Date(now + ttl * 1000),
      signingAlgorithm: EC_ALG,
      publicKey: csr.publicKey,
      signingKey: this.#rootKey as never,
      extensions: [
        new x509.BasicConstraintsExtension(false, undefined, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyEncipherment, true),
        new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth]),
        new x509.SubjectAlternativeNameExtension([{ type: 'url', value: uri }], true),
        await x509.AuthorityKeyIdentifierExtension.create(this.#root),
      ],
    });
    this.#log.info({ identity: uri, serialNumber: leaf.serialNumber, notAfter: leaf.notAfter.toISOString() }, 'signed a workload certificate');
    return [leaf.toString('pem') + '\n', this.rootCertPem];
  }

  /** A serving certificate for the control plane itself (DNS names and IPs as SANs). */
  async issueServingCert(names: { dns: string[]; ips: string[] }, ttlSeconds = 365 * 86_400): Promise<{ certPem: string; keyPem: string }> {
    const keys = await generateKeyPair();
    const now = Date.now();
    const cert = await x509.X509CertificateGenerator.create({
      serialNumber: serial(),
      subject: 'CN=nodemesh-control-plane',
      issuer: this.#root.subject,
      notBefore: new Date(now - BACKDATE_MS),
      notAfter: new Date(now + ttlSeconds * 1000),
      signingAlgorithm: EC_ALG,
      publicKey: keys.publicKey as never,
      signingKey: this.#rootKey as never,
      extensions: [
        new x509.BasicConstraintsExtension(false, undefined, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyEncipherment, true),
        new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth]),
        new x509.SubjectAlternativeNameExtension([...names.dns.map((value) => ({ type: 'dns' as const, value })), ...names.ips.map((value) => ({ type: 'ip' as const, value }))]),
        await x509.AuthorityKeyIdentifierExtension.create(this.#root),
      ],
    });
    return { certPem: cert.toString('pem') + '\n', keyPem: await exportPrivateKeyPem(keys.privateKey) };
  }
}
