// Workload keys and certificates on disk, so that an agent restarted while the CA is away still
// serves HBONE: one 0600 file per identity in a 0700 directory, written atomically, checked
// on load (identity, expiry, key pair, chain to the mesh roots). Key material is never logged
// and never quoted in an error.
import { createPrivateKey, createPublicKey, X509Certificate } from 'node:crypto';
import { chmodSync, mkdirSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { AgentError } from '../errors.js';
import { writeFileAtomic } from '../files.js';
import { parseSpiffeId, tryParseSpiffeId } from './spiffe.js';
import { isSignedBy, splitPem, summarizeCert } from './x509.js';

/** The format tag of a secret file; a file with another tag is not read. */
export const SECRET_FORMAT = 'nodemesh.io/workload-secret/v1';

/** What a secret file holds; notBefore/notAfter are read from the certificate itself. */
export interface StoredSecret {
  identity: string;
  /** Leaf first, then intermediates. */
  certChainPem: string;
  keyPem: string;
  rootsPem: string;
  /** When the CA issued it: rotation is due at a fraction of the lifetime left then. */
  issuedAt: Date;
  notBefore: Date;
  notAfter: Date;
}

/** `<trust-domain>~<namespace>~<service-account>.json`: `~` is in none of the three. */
export function secretFileName(identity: string): string {
  const id = parseSpiffeId(identity);
  return `${id.trustDomain}~${id.namespace}~${id.serviceAccount}.json`;
}

function publicDer(key: ReturnType<typeof createPublicKey>): Buffer {
  return key.export({ format: 'der', type: 'spki' });
}

/** Why a file is not used (a TypeError); an `expired` one can never become usable and is removed. */
function unusable(message: string, expired = false): TypeError & { expired: boolean } {
  return Object.assign(new TypeError(message), { expired });
}

/** Throws unusable() saying what is wrong, never quoting the content. */
function check(raw: unknown, fileName: string, trustedRootsPem: string | undefined, now: number): StoredSecret {
  const o = raw as Record<string, unknown>;
  if (typeof o !== 'object' || o === null || o.format !== SECRET_FORMAT) throw unusable(`format is not ${SECRET_FORMAT}`);
  for (const f of ['identity', 'certChainPem', 'keyPem', 'rootsPem', 'issuedAt'] as const) if (typeof o[f] !== 'string') throw unusable(`${f} is missing`);
  const identity = o.identity as string;
  if (!tryParseSpiffeId(identity) || secretFileName(identity) !== fileName) throw unusable('the identity does not match the file name');
  const certs = splitPem(o.certChainPem as string);
  if (certs.length === 0) throw unusable('certChainPem holds no certificate');
  const leaf = summarizeCert(certs[0]!);
  if (!leaf.subjectAltNames.includes(`URI:${identity}`)) throw unusable(`the certificate is not for ${identity}`);
  if (leaf.notAfter.getTime() <= now) throw unusable(`the certificate expired at ${leaf.notAfter.toISOString()}`, true);
  let key;
  try {
    key = createPrivateKey(o.keyPem as string);
  } catch {
    throw unusable('keyPem is not a private key');
  }
  if (!publicDer(createPublicKey(key)).equals(publicDer(new X509Certificate(certs[0]!).publicKey))) throw unusable('the key does not belong to the certificate');
  const rootsPem = trustedRootsPem ?? (o.rootsPem as string);
  const roots = splitPem(rootsPem);
  for (let i = 0; i + 1 < certs.length; i++) if (!isSignedBy(certs[i]!, certs[i + 1]!)) throw unusable(`certificate ${i} of the chain is not signed by the next`);
  if (!roots.some((r) => isSignedBy(certs.at(-1)!, r))) throw unusable('the chain does not lead to the mesh roots (was the root rotated?)');
  const issuedAt = new Date(o.issuedAt as string);
  if (Number.isNaN(issuedAt.getTime())) throw unusable('issuedAt is not a date');
  return { identity, certChainPem: o.certChainPem as string, keyPem: o.keyPem as string, rootsPem, issuedAt, notBefore: leaf.notBefore, notAfter: leaf.notAfter };
}

export class SecretStore {
  readonly dir: string;

  constructor(dir: string) {
    this.dir = dir;
  }

  /** Writes (replaces) an identity's file, 0600 in a 0700 directory. */
  save(s: Omit<StoredSecret, 'notBefore' | 'notAfter'>): void {
    mkdirSync(this.dir, { recursive: true, mode: 0o700 });
    chmodSync(this.dir, 0o700);
    const file = { format: SECRET_FORMAT, identity: s.identity, certChainPem: s.certChainPem, keyPem: s.keyPem, rootsPem: s.rootsPem, issuedAt: s.issuedAt.toISOString() };
    writeFileAtomic(join(this.dir, secretFileName(s.identity)), JSON.stringify(file) + '\n', { mode: 0o600 });
  }

  remove(identity: string): void {
    rmSync(join(this.dir, secretFileName(identity)), { force: true });
  }

  /**
   * Every usable secret on disk. A file that cannot be used (unreadable, corrupt, expired,
   * not for the roots in `trustedRootsPem`) is listed in `errors` as NM_ERR_STATE_FILE naming
   * it; an expired one is removed (it can never be used again), the others are left for an
   * operator to look at until a new certificate for the identity replaces them.
   */
  load(trustedRootsPem?: string, now = Date.now()): { secrets: StoredSecret[]; errors: AgentError[] } {
    const secrets: StoredSecret[] = [];
    const errors: AgentError[] = [];
    let names: string[];
    try {
      names = readdirSync(this.dir).filter((n) => n.endsWith('.json') && !n.startsWith('.'));
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') errors.push(new AgentError('NM_ERR_STATE_FILE', `cannot list the secrets directory: ${(e as Error).message}`, { where: this.dir }));
      return { secrets, errors };
    }
    for (const name of names) {
      const path = join(this.dir, name);
      let raw: unknown;
      try {
        raw = JSON.parse(readFileSync(path, 'utf8'));
      } catch (e) {
        const unreadable = (e as NodeJS.ErrnoException).code !== undefined;
        errors.push(new AgentError('NM_ERR_STATE_FILE', unreadable ? `cannot read the workload secret: ${(e as NodeJS.ErrnoException).code}` : 'the workload secret is not valid JSON', { where: path }));
        continue;
      }
      try {
        secrets.push(check(raw, name, trustedRootsPem, now));
      } catch (e) {
        errors.push(new AgentError('NM_ERR_STATE_FILE', `the workload secret is not usable: ${(e as Error).message}; a new certificate will be requested`, { where: path }));
        if ((e as { expired?: boolean }).expired === true) rmSync(path, { force: true });
      }
    }
    return { secrets, errors };
  }
}
