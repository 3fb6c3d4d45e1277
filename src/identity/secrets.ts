// Per-identity keys and certificates for the proxy: generates an ECDSA P-256 key and a CSR per
// SPIFFE identity, gets it signed, and rotates it well before it expires. With a store, every
// certificate issued is kept on disk and restore() serves them again after a restart.
import { EventEmitter } from 'node:events';
import { IdentityError } from '../errors.js';
import { log as rootLog, type Logger } from '../log.js';
import type { CertificateSigner } from './ca-client.js';
import type { SecretStore } from './secret-store.js';
import { parseSpiffeId } from './spiffe.js';
import { createCsr, exportPrivateKeyPem, generateKeyPair, isSignedBy, splitPem, summarizeCert } from './x509.js';

export interface Secret {
  /** spiffe://<td>/ns/<ns>/sa/<sa> */
  identity: string;
  /** Leaf first, then intermediates (the root is in rootsPem). */
  certChainPem: string;
  keyPem: string;
  /** The trust anchors peers' certificates are verified against. */
  rootsPem: string;
  notBefore: Date;
  notAfter: Date;
}

/** What /config_dump may show of a secret: never the key. */
export interface SecretInfo {
  identity: string;
  state: 'ready' | 'pending' | 'failed';
  serialNumber?: string;
  subjectAltNames?: string[];
  notBefore?: string;
  notAfter?: string;
  /** When the next rotation is due. */
  rotateAt?: string;
  lastError?: string;
}

export interface SecretManagerOptions {
  ca: CertificateSigner;
  /** Trust anchors; default: the last certificate of each chain the CA returns. */
  rootsPem?: string;
  /** Requested lifetime; the CA may grant less. Default 24 h. */
  validitySeconds?: number;
  /** Rotate at this fraction of the remaining lifetime at issue (default 0.5, like Istio). */
  rotateAtFraction?: number;
  /** Retry backoff after a failed request. */
  retry?: { initialMs?: number; maxMs?: number };
  /** Where issued secrets are kept across restarts (restore() reads them back). */
  store?: SecretStore;
  logger?: Logger;
}

interface Entry {
  identity: string;
  secret?: Secret;
  pending?: Promise<Secret>;
  timer?: NodeJS.Timeout;
  rotateAt?: number;
  serialNumber?: string;
  subjectAltNames?: string[];
  lastError?: Error;
  failures: number;
}

// 'failed', not 'error': an unheard 'error' event would throw.
type Events = { rotated: [Secret]; failed: [identity: string, err: Error] };

export class SecretManager extends EventEmitter<Events> {
  readonly #opts: SecretManagerOptions;
  readonly #log: Logger;
  readonly #entries = new Map<string, Entry>();
  #closed = false;

  constructor(opts: SecretManagerOptions) {
    super();
    this.#opts = opts;
    this.#log = (opts.logger ?? rootLog).child({ component: 'secrets' });
  }

  /**
   * The current certificate for an identity, fetching it on first use. Concurrent callers share
   * one request. A certificate past its expiry is never returned.
   */
  get(identity: string): Promise<Secret> {
    if (this.#closed) return Promise.reject(new IdentityError('NM_ERR_CA', 'the secret manager is closed'));
    parseSpiffeId(identity);
    let e = this.#entries.get(identity);
    if (!e) {
      e = { identity, failures: 0 };
      this.#entries.set(identity, e);
    }
    if (e.secret && e.secret.notAfter.getTime() > Date.now()) return Promise.resolve(e.secret);
    return e.pending ?? this.#fetch(e);
  }

  /**
   * Drops an identity (its last pod left the node): no more rotation, the key and certificate
   * out of memory, and its file off the disk (also when only the file was left). A request
   * in flight for it is dropped when it completes.
   */
  forget(identity: string): void {
    const e = this.#entries.get(identity);
    if (e) {
      clearTimeout(e.timer);
      this.#entries.delete(identity);
    }
    try {
      this.#opts.store?.remove(identity);
    } catch (err) {
      this.#log.warn({ err, identity }, 'cannot remove the stored certificate');
    }
    if (e) this.#log.info({ identity }, 'certificate forgotten: no pod of this node has the identity any more');
  }

  /** Forgets every identity held that is not in `keep` (the node's pods' identities); returns them. */
  retain(keep: Iterable<string>): string[] {
    const wanted = new Set(keep);
    const gone = [...this.#entries.keys()].filter((id) => !wanted.has(id));
    for (const id of gone) this.forget(id);
    return gone;
  }

  /**
   * Serves the certificates the store holds (checked: identity, expiry, key, chain to the
   * configured roots) until they are rotated, on the schedule they were issued with; one due
   * already is rotated now, in the background, and served meanwhile. Unusable files are
   * logged (never their content). Call before anything asks for a certificate.
   */
  restore(): string[] {
    const store = this.#opts.store;
    if (!store || this.#closed) return [];
    const { secrets, errors } = store.load(this.#opts.rootsPem);
    for (const err of errors) this.#log.warn({ err }, 'stored certificate not used');
    const restored: string[] = [];
    for (const s of secrets) {
      if (this.#entries.get(s.identity)?.secret) continue;
      const secret: Secret = { identity: s.identity, certChainPem: s.certChainPem, keyPem: s.keyPem, rootsPem: s.rootsPem, notBefore: s.notBefore, notAfter: s.notAfter };
      const e: Entry = { identity: s.identity, failures: 0, secret };
      this.#entries.set(s.identity, e);
      const sum = summarizeCert(secret.certChainPem);
      e.serialNumber = sum.serialNumber;
      e.subjectAltNames = sum.subjectAltNames;
      e.rotateAt = this.#rotateAt(s.issuedAt.getTime(), secret.notAfter);
      this.#schedule(e, e.rotateAt - Date.now());
      this.#log.info({ identity: s.identity, serialNumber: sum.serialNumber, notAfter: secret.notAfter.toISOString(), rotateAt: new Date(e.rotateAt).toISOString() }, 'certificate restored from disk');
      restored.push(s.identity);
    }
    return restored;
  }

  /** Rotation is due at a fraction of the lifetime left at issue. */
  #rotateAt(issuedAt: number, notAfter: Date): number {
    return issuedAt + Math.max(0, notAfter.getTime() - issuedAt) * (this.#opts.rotateAtFraction ?? 0.5);
  }

  #persist(secret: Secret, issuedAt: number): void {
    try {
      this.#opts.store?.save({ identity: secret.identity, certChainPem: secret.certChainPem, keyPem: secret.keyPem, rootsPem: secret.rootsPem, issuedAt: new Date(issuedAt) });
    } catch (err) {
      // The certificate is served all the same; only a restart without the CA would miss it.
      this.#log.warn({ err, identity: secret.identity }, 'cannot store the certificate on disk');
    }
  }

  list(): SecretInfo[] {
    return [...this.#entries.values()].map((e) => ({
      identity: e.identity,
      state: e.secret && e.secret.notAfter.getTime() > Date.now() ? 'ready' : e.pending ? 'pending' : 'failed',
      ...(e.serialNumber ? { serialNumber: e.serialNumber } : {}),
      ...(e.subjectAltNames ? { subjectAltNames: e.subjectAltNames } : {}),
      ...(e.secret ? { notBefore: e.secret.notBefore.toISOString(), notAfter: e.secret.notAfter.toISOString() } : {}),
      ...(e.rotateAt ? { rotateAt: new Date(e.rotateAt).toISOString() } : {}),
      ...(e.lastError ? { lastError: e.lastError.message } : {}),
    }));
  }

  close(): void {
    this.#closed = true;
    for (const e of this.#entries.values()) clearTimeout(e.timer);
    this.#entries.clear();
  }

  #fetch(e: Entry): Promise<Secret> {
    const p = this.#issue(e.identity).then(
      (secret) => {
        if (this.#entries.get(e.identity) !== e) return secret; // forgotten meanwhile
        const rotated = e.secret !== undefined;
        e.secret = secret;
        e.pending = undefined;
        e.failures = 0;
        e.lastError = undefined;
        const s = summarizeCert(secret.certChainPem);
        e.serialNumber = s.serialNumber;
        e.subjectAltNames = s.subjectAltNames;
        // Rotate at a fraction of the lifetime left at issue, so a CA that backdates notBefore
        // (clock skew allowance) does not make us rotate early or late.
        const now = Date.now();
        e.rotateAt = this.#rotateAt(now, secret.notAfter);
        this.#schedule(e, e.rotateAt - now);
        this.#persist(secret, now);
        this.#log.info({ identity: e.identity, serialNumber: s.serialNumber, notAfter: secret.notAfter.toISOString(), rotateAt: new Date(e.rotateAt).toISOString() }, rotated ? 'certificate rotated' : 'certificate issued');
        if (rotated) this.emit('rotated', secret);
        return secret;
      },
      (err: Error) => {
        e.pending = undefined;
        e.lastError = err;
        e.failures++;
        if (this.#entries.get(e.identity) === e && !this.#closed) {
          const initial = this.#opts.retry?.initialMs ?? 1000;
          const max = this.#opts.retry?.maxMs ?? 60_000;
          const base = Math.min(max, initial * 2 ** (e.failures - 1));
          // Keep serving the current certificate while it is valid; retry with jittered backoff.
          this.#schedule(e, base / 2 + (Math.random() * base) / 2);
        }
        this.#log.warn({ err, identity: e.identity, failures: e.failures }, 'certificate request failed; will retry');
        this.emit('failed', e.identity, err);
        throw err;
      },
    );
    e.pending = p;
    return p;
  }

  #schedule(e: Entry, delayMs: number): void {
    clearTimeout(e.timer);
    e.timer = setTimeout(() => {
      e.timer = undefined;
      if (this.#entries.get(e.identity) === e && !e.pending) this.#fetch(e).catch(() => {});
    }, Math.max(0, delayMs));
    e.timer.unref?.();
  }

  async #issue(identity: string): Promise<Secret> {
    const keys = await generateKeyPair();
    const csr = await createCsr(keys, identity);
    const chain = await this.#opts.ca.createCertificate(csr, this.#opts.validitySeconds ?? 86_400);
    const certs = chain.flatMap(splitPem);
    if (certs.length === 0) throw new IdentityError('NM_ERR_CA', `the CA returned no certificate for ${identity}`);
    const leaf = summarizeCert(certs[0]!);
    if (!leaf.subjectAltNames.includes(`URI:${identity}`)) {
      throw new IdentityError('NM_ERR_CA', `the CA returned a certificate for ${leaf.subjectAltNames.join(', ') || 'no SAN'}, not ${identity}`);
    }
    // The chain is leaf first; self-signed certificates in it are roots, not chain members.
    const selfSigned = (c: string) => isSignedBy(c, c);
    const chainPem = certs.filter((c, i) => i === 0 || !selfSigned(c)).join('');
    const roots = this.#opts.rootsPem ?? certs.filter((c, i) => i > 0 && selfSigned(c)).join('');
    if (!roots) throw new IdentityError('NM_ERR_CA', `no trust anchor for ${identity}: the CA returned no root and none is configured`);
    return {
      identity,
      certChainPem: chainPem,
      keyPem: await exportPrivateKeyPem(keys.privateKey),
      rootsPem: roots,
      notBefore: leaf.notBefore,
      notAfter: leaf.notAfter,
    };
  }
}
