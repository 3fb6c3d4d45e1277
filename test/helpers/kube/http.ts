// The stand-in's HTTP front: bearer-token authentication, discovery documents, and the REST
// paths (/api/v1/..., /apis/<group>/<version>/..., namespaced and cluster-wide, subresources)
// mapped onto Cluster operations, with every failure answered as a v1 Status.
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Cluster } from './cluster.js';
import { badRequest, KubeApiError, methodNotAllowed, type KubeObject } from './errors.js';
import { apiGroup, apiGroupList, apiResourceList, apiVersionOf, apiVersions, VERSION_INFO, type ResourceKind } from './resources.js';
import { ISSUER, type TokenAuthority } from './tokens.js';
import { serveWatch, type WatchSet } from './watch.js';

export interface Front {
  cluster: Cluster;
  tokens: TokenAuthority;
  watches: WatchSet;
  adminToken: string;
  address: () => string;
  bookmarkEveryMs: number;
  requests: { method: string; path: string; status: number }[];
}

const MAX_BODY = 3 * 1024 * 1024;
const PUBLIC = new Set(['/healthz', '/livez', '/readyz', '/version', '/openid/v1/jwks', '/.well-known/openid-configuration']);

function readBody(req: IncomingMessage): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let n = 0;
    req.on('data', (c: Buffer) => {
      n += c.length;
      if (n > MAX_BODY) { reject(new KubeApiError(413, 'RequestEntityTooLarge', 'Request entity too large: limit is 3145728')); req.destroy(); return; }
      chunks.push(c);
    });
    req.on('end', () => {
      const text = Buffer.concat(chunks).toString('utf8');
      if (text.trim() === '') return resolve(undefined);
      try { resolve(JSON.parse(text)); } catch (err) { reject(badRequest(`couldn't get version/kind; json parse error: ${(err as Error).message}`)); }
    });
    req.on('error', reject);
  });
}

const notServed = (): KubeApiError => new KubeApiError(404, 'NotFound', 'the server could not find the requested resource');

interface Target { r: ResourceKind; version: string; ns?: string; name?: string; sub?: string; watchPrefix: boolean }

/** Splits a resource path into kind, namespace, name and subresource; undefined when it is not one. */
function resolve(cluster: Cluster, parts: string[]): Target | undefined {
  let group: string;
  let version: string;
  let rest: string[];
  if (parts[0] === 'api' && parts[1] === 'v1') { group = ''; version = 'v1'; rest = parts.slice(2); }
  else if (parts[0] === 'apis' && parts.length >= 3) { group = parts[1]!; version = parts[2]!; rest = parts.slice(3); }
  else return undefined;
  const watchPrefix = rest[0] === 'watch';
  if (watchPrefix) rest = rest.slice(1);
  if (!rest.length) return undefined;
  let ns: string | undefined;
  if (rest[0] === 'namespaces' && rest.length >= 3 && !(group === '' && ['status', 'finalize'].includes(rest[2]!))) {
    ns = rest[1];
    rest = rest.slice(2);
  }
  const [plural, name, sub, ...extra] = rest;
  if (extra.length) throw notServed();
  const r = cluster.find(group, version, plural!);
  if (!r) throw notServed();
  if (ns !== undefined && !r.namespaced) throw notServed();
  if (sub !== undefined && !r.subresources.includes(sub)) throw notServed();
  return { r, version, ns, name, sub, watchPrefix };
}

/** Handles one request; never throws (a failure becomes a Status response). */
export async function handle(f: Front, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const url = new URL(req.url ?? '/', 'https://standin');
  const method = req.method ?? 'GET';
  const record = (status: number): void => { f.requests.push({ method, path: url.pathname + url.search, status }); };
  const send = (status: number, body: unknown): void => {
    const text = typeof body === 'string' ? body : JSON.stringify(body);
    res.writeHead(status, { 'Content-Type': typeof body === 'string' ? 'text/plain; charset=utf-8' : 'application/json', 'Content-Length': Buffer.byteLength(text) });
    res.end(text);
    record(status);
  };
  try {
    const path = url.pathname.length > 1 ? url.pathname.replace(/\/+$/, '') : url.pathname;
    if (!PUBLIC.has(path) && !(await authenticated(f, req.headers.authorization))) throw new KubeApiError(401, 'Unauthorized', 'Unauthorized');
    const doc = discovery(f, path);
    if (doc !== undefined) return send(200, doc);
    const t = resolve(f.cluster, path.split('/').filter(Boolean));
    if (!t) throw notServed();
    const q = url.searchParams;
    const watch = t.watchPrefix || q.get('watch') === 'true' || q.get('watch') === '1';
    if (method === 'GET' && watch) {
      const fieldSelector = [q.get('fieldSelector'), t.name ? `metadata.name=${t.name}` : ''].filter(Boolean).join(',');
      const match = f.cluster.matcher(t.r, t.ns, q.get('labelSelector') ?? undefined, fieldSelector || undefined);
      const timeout = q.get('timeoutSeconds');
      const rv = q.get('resourceVersion');
      if (rv && !/^\d+$/.test(rv)) throw badRequest(`invalid resource version "${rv}"`);
      record(200);
      return serveWatch(f.cluster, res, {
        r: t.r, version: t.version, match, resourceVersion: q.get('resourceVersion') ?? undefined,
        allowWatchBookmarks: q.get('allowWatchBookmarks') === 'true', sendInitialEvents: q.get('sendInitialEvents') === 'true',
        timeoutSeconds: timeout ? Number(timeout) : undefined, bookmarkEveryMs: f.bookmarkEveryMs,
      }, f.watches);
    }
    const { status, body } = await rest(f, t, method, req, q);
    return send(status, body);
  } catch (err) {
    const e = err instanceof KubeApiError ? err : new KubeApiError(500, 'InternalError', `Internal error occurred: ${(err as Error).message}`);
    if (!res.headersSent) send(e.code, e.status);
    else res.destroy();
  }
}

async function authenticated(f: Front, header: string | undefined): Promise<boolean> {
  const m = /^Bearer\s+(\S+)$/i.exec(header ?? '');
  if (!m) return false;
  if (m[1] === f.adminToken) return true;
  // A ServiceAccount token for the API's own audience works too (the in-cluster config's credential).
  try { return (await f.tokens.review(f.cluster, m[1]!, [ISSUER])).authenticated === true; } catch { return false; }
}

function discovery(f: Front, path: string): unknown {
  const kinds = f.cluster.kinds();
  if (path === '/version') return VERSION_INFO;
  if (path === '/healthz' || path === '/livez' || path === '/readyz') return 'ok';
  if (path === '/api') return apiVersions(f.address());
  if (path === '/api/v1') return apiResourceList(kinds, '', 'v1');
  if (path === '/apis') return apiGroupList(kinds);
  if (path === '/openid/v1/jwks') return f.tokens.jwks();
  if (path === '/.well-known/openid-configuration') {
    return { issuer: ISSUER, jwks_uri: `https://${f.address()}/openid/v1/jwks`, response_types_supported: ['id_token'], subject_types_supported: ['public'], id_token_signing_alg_values_supported: ['RS256'] };
  }
  const m = /^\/apis\/([^/]+)(?:\/([^/]+))?$/.exec(path);
  if (m) {
    const [, group, version] = m as unknown as [string, string, string | undefined];
    if (version === undefined) return apiGroup(kinds, group) ?? (() => { throw notServed(); })();
    const list = apiResourceList(kinds, group, version);
    if (!(list.resources as unknown[]).length) throw notServed();
    return list;
  }
  return undefined;
}

async function rest(f: Front, t: Target, method: string, req: IncomingMessage, q: URLSearchParams): Promise<{ status: number; body: unknown }> {
  const c = f.cluster;
  const { r, version, ns, name, sub } = t;
  const api = { fromApi: true, version };
  const out = (o: KubeObject): KubeObject => c.render(o, version, r);
  if (!name) {
    if (method === 'GET') {
      if (!r.verbs.includes('list')) throw methodNotAllowed();
      const limit = q.get('limit');
      const l = c.list(r, ns, {
        labelSelector: q.get('labelSelector') ?? undefined, fieldSelector: q.get('fieldSelector') ?? undefined,
        limit: limit ? Number(limit) : undefined, continue: q.get('continue') ?? undefined,
        resourceVersion: q.get('resourceVersion') ?? undefined, resourceVersionMatch: q.get('resourceVersionMatch') ?? undefined,
      });
      const metadata = { resourceVersion: String(l.rv), ...(l.continue ? { continue: l.continue, remainingItemCount: l.remainingItemCount } : {}) };
      return { status: 200, body: { kind: `${r.kind}List`, apiVersion: apiVersionOf(r.group, version), metadata, items: l.items.map((o) => (r.crd ? out(o) : o)) } };
    }
    if (method === 'POST') {
      const body = (await readBody(req)) as KubeObject;
      if (!body || typeof body !== 'object') throw badRequest('the body of the request was empty');
      if (r.kind === 'TokenReview') {
        const spec = (body.spec ?? {}) as { token?: string; audiences?: string[] };
        const status = await f.tokens.review(c, String(spec.token ?? ''), spec.audiences);
        return { status: 201, body: { kind: 'TokenReview', apiVersion: 'authentication.k8s.io/v1', metadata: { creationTimestamp: null }, spec, status } };
      }
      return { status: 201, body: out(c.create(r, ns, body, api)) };
    }
    if (method === 'DELETE' && r.verbs.includes('deletecollection')) {
      const items = c.list(r, ns, { labelSelector: q.get('labelSelector') ?? undefined, fieldSelector: q.get('fieldSelector') ?? undefined }).items;
      const gone = items.map((o) => out(c.delete(r, o.metadata.namespace, o.metadata.name)));
      return { status: 200, body: { kind: `${r.kind}List`, apiVersion: apiVersionOf(r.group, version), metadata: { resourceVersion: String(c.store.rv) }, items: gone } };
    }
    throw methodNotAllowed();
  }
  if (sub === 'token' || sub === 'binding') {
    if (method !== 'POST') throw methodNotAllowed();
    const body = ((await readBody(req)) ?? {}) as { spec?: { audiences?: string[]; expirationSeconds?: number; boundObjectRef?: { kind?: string; name?: string; uid?: string } }; target?: { name?: string } };
    if (sub === 'binding') {
      c.bind(r, ns!, name, String(body.target?.name ?? ''));
      return { status: 201, body: { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Success', code: 201 } };
    }
    const spec = body.spec ?? {};
    const ref = spec.boundObjectRef;
    if (ref && ref.kind !== 'Pod') throw badRequest(`cannot bind token for object of type ${String(ref.kind)}: the stand-in binds to Pods only`);
    if (ref?.uid) {
      const pod = c.get(c.findKind('v1', 'Pod'), ns, String(ref.name));
      if (pod.metadata.uid !== ref.uid) {
        throw new KubeApiError(409, 'Conflict', `the UID in the bound object reference (${ref.uid}) does not match the UID in record. The object might have been deleted and then recreated`);
      }
    }
    const minted = await f.tokens.mint(c, ns!, name, { audiences: spec.audiences, expirationSeconds: spec.expirationSeconds, boundPod: ref?.name }, true);
    return {
      status: 201,
      body: {
        kind: 'TokenRequest', apiVersion: 'authentication.k8s.io/v1', metadata: { name, namespace: ns, creationTimestamp: null },
        spec: { audiences: spec.audiences?.length ? spec.audiences : [ISSUER], expirationSeconds: spec.expirationSeconds ?? 3600, boundObjectRef: minted.boundObjectRef ?? null },
        status: { token: minted.token, expirationTimestamp: minted.expirationTimestamp },
      },
    };
  }
  const subresource = sub === 'status' ? ('status' as const) : undefined;
  switch (method) {
    case 'GET': return { status: 200, body: out(c.get(r, ns, name)) };
    case 'PUT': return { status: 200, body: out(c.update(r, ns, name, (await readBody(req)) as KubeObject, { ...api, subresource })) };
    case 'PATCH': return { status: 200, body: out(c.patch(r, ns, name, req.headers['content-type'] ?? '', await readBody(req), { ...api, subresource })) };
    case 'DELETE': {
      if (subresource) throw methodNotAllowed();
      const opts = ((await readBody(req)) ?? {}) as { preconditions?: { uid?: string; resourceVersion?: string } };
      const gone = c.delete(r, ns, name, opts.preconditions);
      // Pods, Services, ServiceAccounts and custom resources answer with the object; the rest with a Status.
      if (r.crd || ['Pod', 'Service', 'ServiceAccount'].includes(r.kind)) return { status: 200, body: out(gone) };
      return { status: 200, body: { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Success', details: { name, group: r.group || undefined, kind: r.plural, uid: gone.metadata.uid } } };
    }
    default: throw methodNotAllowed();
  }
}
