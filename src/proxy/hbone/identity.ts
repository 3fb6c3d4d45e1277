// Reads the peer's SPIFFE identity from its certificate and checks it: the exact URI SAN the
// client expects of a server, or any SPIFFE ID of our trust domain for a client.
import type { PeerCertificate } from 'node:tls';
import { HboneError, NodemeshError } from '../../errors.js';
import { tryParseSpiffeId, x509 } from '../../identity/index.js';

const SAN_OID = '2.5.29.17';
// Peers reconnect with the same certificate over and over; parsing its DER once is enough.
const cache = new Map<string, string[]>();
const CACHE_MAX = 1024;

/** The URI SANs of a DER certificate, exactly as encoded (no string escaping to undo). */
export function uriSans(der: Buffer, fingerprint?: string): string[] {
  const hit = fingerprint ? cache.get(fingerprint) : undefined;
  if (hit) return hit;
  const ext = new x509.X509Certificate(der).getExtension(SAN_OID);
  const uris = ext ? new x509.SubjectAlternativeNameExtension(ext.rawData).names.items.filter((n) => n.type === 'url').map((n) => n.value) : [];
  if (fingerprint) {
    if (cache.size >= CACHE_MAX) cache.delete(cache.keys().next().value!);
    cache.set(fingerprint, uris);
  }
  return uris;
}

/**
 * The SPIFFE ID of a peer certificate: its one URI SAN (an X509-SVID carries exactly one,
 * https://github.com/spiffe/spiffe/blob/main/standards/X509-SVID.md#2-spiffe-id).
 * Throws NM_ERR_HBONE_IDENTITY naming what is wrong.
 */
export function spiffeIdOf(cert: PeerCertificate | undefined, who: string): string {
  if (!cert?.raw) throw new HboneError('NM_ERR_HBONE_IDENTITY', `${who} presented no certificate`);
  const uris = uriSans(cert.raw, cert.fingerprint256);
  if (uris.length !== 1) {
    throw new HboneError('NM_ERR_HBONE_IDENTITY', `${who}'s certificate must carry exactly one URI SAN (a SPIFFE ID), found ${uris.length ? uris.join(', ') : 'none'}`);
  }
  return uris[0]!;
}

/** Checks that a client's certificate names a workload of `trustDomain`; returns its ID. */
export function verifyClientIdentity(cert: PeerCertificate | undefined, trustDomain: string): string {
  const id = spiffeIdOf(cert, 'the client');
  const parsed = tryParseSpiffeId(id);
  if (!parsed) throw new HboneError('NM_ERR_HBONE_IDENTITY', `the client's URI SAN ${id} is not a SPIFFE workload ID (spiffe://<td>/ns/<ns>/sa/<sa>)`);
  if (parsed.trustDomain !== trustDomain) {
    throw new HboneError('NM_ERR_HBONE_IDENTITY', `the client's identity ${id} is not in trust domain ${trustDomain}`, { peerIdentity: id });
  }
  return id;
}

/** Checks that a server's certificate names exactly the expected destination identity. */
export function verifyServerIdentity(cert: PeerCertificate | undefined, expected: string, where: string): NodemeshError | undefined {
  let id: string;
  try {
    id = spiffeIdOf(cert, `the HBONE server at ${where}`);
  } catch (e) {
    return e as NodemeshError;
  }
  if (id === expected) return undefined;
  return new HboneError('NM_ERR_HBONE_IDENTITY', `the HBONE server at ${where} is ${id}, not the expected ${expected}; the address may have been reused by another workload, or the workload index is stale`,
    { peerIdentity: id, expectedIdentity: expected },
  );
}
