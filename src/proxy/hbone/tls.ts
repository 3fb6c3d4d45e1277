// TLS settings HBONE requires of both ends: TLS 1.3 only, ALPN h2, the mesh roots as the only
// trust anchors, and the workload's SPIFFE certificate as the presented one.
import { createSecureContext, type SecureContext, type SecureContextOptions } from 'node:tls';

/** A workload's certificate, key and the mesh roots, all PEM. */
export interface HboneCredentials {
  /** Leaf first, then intermediates. */
  certChainPem: string;
  keyPem: string;
  /** Trust anchors the peer's chain must end in. */
  rootsPem: string;
}

export const ALPN_H2 = ['h2'];

export function contextOptions(c: HboneCredentials): SecureContextOptions {
  return { cert: c.certChainPem, key: c.keyPem, ca: c.rootsPem, minVersion: 'TLSv1.3', maxVersion: 'TLSv1.3' };
}

export function sameCredentials(a: HboneCredentials | undefined, b: HboneCredentials): boolean {
  return a !== undefined && (a === b || (a.certChainPem === b.certChainPem && a.keyPem === b.keyPem && a.rootsPem === b.rootsPem));
}

/**
 * One SecureContext per credentials, rebuilt only when they change: parsing a key and chain
 * costs about a millisecond, too much to pay per session.
 */
export class ContextCache {
  readonly #byKey = new Map<string, { creds: HboneCredentials; ctx: SecureContext }>();

  get(key: string, creds: HboneCredentials): SecureContext {
    const hit = this.#byKey.get(key);
    if (hit && sameCredentials(hit.creds, creds)) return hit.ctx;
    const ctx = createSecureContext(contextOptions(creds));
    this.#byKey.set(key, { creds, ctx });
    return ctx;
  }

  get size(): number {
    return this.#byKey.size;
  }

  delete(key: string): void {
    this.#byKey.delete(key);
  }

  clear(): void {
    this.#byKey.clear();
  }
}
