// SPIFFE IDs as Istio uses them: spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>.

export interface SpiffeId {
  trustDomain: string;
  namespace: string;
  serviceAccount: string;
}

const PREFIX = 'spiffe://';
// https://github.com/spiffe/spiffe/blob/main/standards/SPIFFE-ID.md: lowercase trust domain.
const TRUST_DOMAIN = /^[a-z0-9._-]+$/;
const SEGMENT = /^[A-Za-z0-9._-]+$/;

/** Parses `spiffe://td/ns/<ns>/sa/<sa>`; throws TypeError saying what is wrong. */
export function parseSpiffeId(uri: string): SpiffeId {
  if (!uri.startsWith(PREFIX)) throw new TypeError(`SPIFFE ID ${JSON.stringify(uri)} must start with spiffe://`);
  const parts = uri.slice(PREFIX.length).split('/');
  if (parts.length !== 5 || parts[1] !== 'ns' || parts[3] !== 'sa') {
    throw new TypeError(`SPIFFE ID ${JSON.stringify(uri)} must have the form spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`);
  }
  const [trustDomain, , namespace, , serviceAccount] = parts as [string, string, string, string, string];
  if (!TRUST_DOMAIN.test(trustDomain)) throw new TypeError(`SPIFFE ID ${JSON.stringify(uri)}: trust domain ${JSON.stringify(trustDomain)} is not valid`);
  if (!SEGMENT.test(namespace) || !SEGMENT.test(serviceAccount)) throw new TypeError(`SPIFFE ID ${JSON.stringify(uri)}: namespace and service account must be non-empty names`);
  return { trustDomain, namespace, serviceAccount };
}

/** Like parseSpiffeId, but returns undefined instead of throwing. */
export function tryParseSpiffeId(uri: string): SpiffeId | undefined {
  try {
    return parseSpiffeId(uri);
  } catch {
    return undefined;
  }
}

export function formatSpiffeId(id: SpiffeId): string {
  return `${PREFIX}${id.trustDomain}/ns/${id.namespace}/sa/${id.serviceAccount}`;
}

/** The principal as Istio policies write it: the SPIFFE ID without `spiffe://`. */
export function principalOf(id: SpiffeId | string): string {
  const s = typeof id === 'string' ? id : formatSpiffeId(id);
  return s.startsWith(PREFIX) ? s.slice(PREFIX.length) : s;
}
