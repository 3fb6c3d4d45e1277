// A stand-in for kube-apiserver in tests: no real API server can run on these machines (none in
// Debian, no downloads), so this one speaks the real wire protocol over HTTPS and the real
// @kubernetes/client-node drives it unmodified (KubeConfig, CoreV1Api, CustomObjectsApi,
// makeInformer/ListWatch, Watch, AuthenticationV1Api).
//
// What it stands in for (test/helpers/kube/ holds the parts):
//   - discovery (/api, /api/v1, /apis, /apis/<group>[/<version>], /version, /openid/v1/jwks);
//   - the kinds of KUBE_RESOURCES: v1 Namespace, Pod, Service, ServiceAccount, Node;
//     discovery.k8s.io/v1 EndpointSlice; the Istio security and networking CRDs; Gateway API
//     HTTPRoute; authentication.k8s.io/v1 TokenReview; apiextensions.k8s.io/v1 CRDs (creating or
//     deleting a CRD starts or stops serving its kind, so "CRD absent" is a test setup);
//   - list (resourceVersion, resourceVersionMatch, labelSelector, fieldSelector with the real
//     per-kind field labels, limit/continue), watch (JSON lines, replay from a resourceVersion,
//     410 Expired after compaction, bookmarks, timeoutSeconds, selector transitions), create
//     (generateName, uid, creationTimestamp), update (409 on a stale resourceVersion), merge /
//     JSON / strategic (reduced) patch, the status subresource, delete with preconditions,
//     deletecollection, pods/binding, serviceaccounts/token (TokenRequest) and TokenReview;
//   - what a fresh cluster holds (unless `seed: false`): namespaces default, kube-system,
//     kube-public, kube-node-lease, a "default" ServiceAccount in each namespace (also in ones
//     created later, as the ServiceAccount controller does), and the default/kubernetes Service
//     (10.96.0.1) with its EndpointSlice pointing at this server;
//   - a few real server behaviours that surprise: status is dropped on create and ignored on a
//     main-resource update over HTTP; built-in list items carry no kind/apiVersion; a write that
//     changes nothing bumps no resourceVersion; generation bumps on changes outside metadata and
//     status; Services get a ClusterIP from 10.96.0.0/16; a namespaced object needs its namespace.
// What it does NOT do: admission (beyond the namespace having to exist and Pod/Service defaults),
// OpenAPI schema validation or field validation, RBAC (any valid bearer token may do anything),
// garbage collection (ownerReferences are ignored), finalizers, graceful deletion (a DELETE removes
// at once, as --grace-period=0 --force), dryRun, server-side apply, protobuf/CBOR/Table output,
// aggregated discovery, version conversion (every served version of a CRD shows the same stored
// object), paging snapshots beyond what the kept history allows, and real schedulers or kubelets.
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Socket } from 'node:net';
import { randomBytes } from 'node:crypto';
import { Cluster } from './kube/cluster.js';
import { KubeApiError, type KubeObject } from './kube/errors.js';
import { handle, type Front } from './kube/http.js';
import { crdObjectFor, groupOf, KUBE_RESOURCES, type ResourceKind } from './kube/resources.js';
import { ISSUER, TokenAuthority, type MintedToken, type TokenOptions } from './kube/tokens.js';
import { makeServingTls } from './kube/tls.js';
import { WatchSet } from './kube/watch.js';

export { crdObjectFor, KUBE_RESOURCES, KubeApiError };
/** The service-account token issuer, also the API server's own audience. */
export { ISSUER as KUBE_ISSUER };
export type { KubeObject, ResourceKind, TokenOptions, MintedToken };

export interface KubeStandIn {
  /** https://127.0.0.1:<port> */
  url: string;
  /** A kubeconfig file (server, CA, bearer token) for the real client: new KubeConfig().loadFromFile(path). */
  kubeconfigPath: string;
  caPem: string;
  /** The admin bearer token the kubeconfig carries. */
  token: string;
  /** TCP connections accepted so far (a client that reuses its connections makes few). */
  connectionsAccepted(): number;
  /** Server-side operations, as a test would do them with kubectl (they bump resourceVersion and notify
   * watchers exactly like API writes). Unlike an HTTP create, create() keeps a status the object carries,
   * and update() writes the whole object, status included (a seeding shortcut for "the kubelet wrote it").
   * A refusal throws KubeApiError (code = HTTP status, status = the v1 Status body). */
  create(obj: KubeObject): KubeObject;
  /** 409 Conflict semantics on a stale metadata.resourceVersion when one is given. */
  update(obj: KubeObject): KubeObject;
  /** A JSON merge patch of `.status` through the status subresource. */
  patchStatus(apiVersion: string, kind: string, ns: string | undefined, name: string, status: unknown): KubeObject;
  delete(apiVersion: string, kind: string, ns: string | undefined, name: string): void;
  get(apiVersion: string, kind: string, ns: string | undefined, name: string): KubeObject | undefined;
  /** Current objects in key order, with apiVersion and kind (as `kubectl get -o json` shows them). */
  list(apiVersion: string, kind: string, ns?: string): KubeObject[];
  /** Forget history: a watch or list from a resourceVersion older than now gets 410 Gone (Expired), as after
   * etcd compaction. Open watches stay open (as on a real server); they see 410 only when they reconnect. */
  compact(): void;
  /** End every open watch cleanly (as a server-side watch timeout does); clients reconnect from their last
   * resourceVersion. */
  endWatches(): void;
  /** Stop serving (close the listener and cut every open watch and connection), keeping the data; start()
   * again on the same port. */
  stop(): Promise<void>;
  start(): Promise<void>;
  /** Requests seen, for assertions (method, path with query, status). A watch is recorded when it starts. */
  requests: { method: string; path: string; status: number }[];
  /** Mint a ServiceAccount token as the TokenRequest API would (audiences, expiry, bound pod). Unlike the
   * HTTP API it takes any expiry and an issuedAt, so a test can make an already expired token. */
  requestToken(ns: string, serviceAccount: string, opts?: TokenOptions): Promise<MintedToken>;
  /** Stop and delete the kubeconfig's directory. */
  close(): Promise<void>;
}

export interface KubeStandInOptions {
  /** Which kinds to serve: default all of KUBE_RESOURCES. An omitted kind answers 404 and is absent from discovery. */
  resources?: readonly ResourceKind[];
  /** How often a watch with allowWatchBookmarks=true gets a BOOKMARK. Default 1000. */
  bookmarkEveryMs?: number;
  /** false: start empty, without the default namespaces, ServiceAccounts and kubernetes Service. Default true. */
  seed?: boolean;
}

function seed(cluster: Cluster, port: number): void {
  const has = (kind: string): boolean => cluster.kinds().some((k) => k.group === '' && k.kind === kind);
  const create = (o: KubeObject): void => { cluster.create(cluster.findKind(o.apiVersion, o.kind), o.metadata.namespace, o, { fromApi: false }); };
  if (has('Namespace')) for (const name of ['default', 'kube-system', 'kube-public', 'kube-node-lease']) create({ apiVersion: 'v1', kind: 'Namespace', metadata: { name, labels: { 'kubernetes.io/metadata.name': name } } });
  if (has('Service')) {
    create({
      apiVersion: 'v1', kind: 'Service', metadata: { name: 'kubernetes', namespace: 'default', labels: { component: 'apiserver', provider: 'kubernetes' } },
      spec: { clusterIP: '10.96.0.1', ports: [{ name: 'https', port: 443, protocol: 'TCP', targetPort: port }] },
    });
  }
  if (cluster.kinds().some((k) => k.kind === 'EndpointSlice')) {
    create({
      apiVersion: 'discovery.k8s.io/v1', kind: 'EndpointSlice',
      metadata: { name: 'kubernetes', namespace: 'default', labels: { 'kubernetes.io/service-name': 'kubernetes', 'endpointslice.kubernetes.io/managed-by': 'endpointslicemirroring-controller.k8s.io' } },
      addressType: 'IPv4', endpoints: [{ addresses: ['127.0.0.1'], conditions: { ready: true } }], ports: [{ name: 'https', port, protocol: 'TCP' }],
    });
  }
}

/** Starts a stand-in API server on 127.0.0.1, port 0, with fresh TLS material and token key. */
export async function startKubeStandIn(opts: KubeStandInOptions = {}): Promise<KubeStandIn> {
  const [tls, tokens] = await Promise.all([makeServingTls(), TokenAuthority.create()]);
  const cluster = new Cluster(opts.resources ?? KUBE_RESOURCES);
  const adminToken = randomBytes(24).toString('base64url');
  const watches = new WatchSet();
  cluster.onKindRemoved((r) => watches.end((w) => w === r));
  const requests: KubeStandIn['requests'] = [];
  let port = 0;
  const front: Front = { cluster, tokens, watches, adminToken, address: () => `127.0.0.1:${port}`, bookmarkEveryMs: opts.bookmarkEveryMs ?? 1000, requests };

  let server: Server | undefined;
  const sockets = new Set<Socket>();
  let accepted = 0;
  const listen = (): Promise<void> => new Promise((resolve, reject) => {
    const s = createServer({ cert: tls.certPem, key: tls.keyPem }, (req, res) => { void handle(front, req, res); });
    s.on('connection', (sock: Socket) => { accepted++; sockets.add(sock); sock.on('close', () => sockets.delete(sock)); });
    s.on('clientError', (_err, sock) => sock.destroy());
    s.once('error', reject);
    s.listen(port, '127.0.0.1', () => {
      port = (s.address() as { port: number }).port;
      server = s;
      resolve();
    });
  });
  await listen();
  if (opts.seed !== false) seed(cluster, port);

  const dir = await mkdtemp(join(tmpdir(), 'nm-kube-standin-'));
  const kubeconfigPath = join(dir, 'kubeconfig');
  const url = `https://127.0.0.1:${port}`;
  await writeFile(kubeconfigPath, JSON.stringify({
    apiVersion: 'v1', kind: 'Config', 'current-context': 'standin',
    clusters: [{ name: 'standin', cluster: { server: url, 'certificate-authority-data': Buffer.from(tls.caPem).toString('base64') } }],
    users: [{ name: 'standin-admin', user: { token: adminToken } }],
    contexts: [{ name: 'standin', context: { cluster: 'standin', user: 'standin-admin', namespace: 'default' } }],
  }, null, 2), { mode: 0o600 });

  const kindOf = (apiVersion: string, kind: string): ResourceKind => cluster.findKind(apiVersion, kind);
  const out = (o: KubeObject, apiVersion: string): KubeObject => {
    const r = kindOf(apiVersion, o.kind);
    return cluster.render(o, groupOf(apiVersion).version, r);
  };
  const stop = async (): Promise<void> => {
    const s = server;
    server = undefined;
    if (!s) return;
    const closed = new Promise<void>((resolve) => s.close(() => resolve()));
    watches.destroyAll();
    for (const sock of sockets) sock.destroy();
    await closed;
  };

  return {
    url, kubeconfigPath, caPem: tls.caPem, token: adminToken, requests,
    connectionsAccepted: () => accepted,
    create(obj) { return out(cluster.create(kindOf(obj.apiVersion, obj.kind), obj.metadata.namespace, obj, { fromApi: false }), obj.apiVersion); },
    update(obj) { return out(cluster.update(kindOf(obj.apiVersion, obj.kind), obj.metadata.namespace ?? 'default', obj.metadata.name, obj, { fromApi: false }), obj.apiVersion); },
    patchStatus(apiVersion, kind, ns, name, status) {
      const r = kindOf(apiVersion, kind);
      return out(cluster.patch(r, ns, name, 'application/merge-patch+json', { status }, { fromApi: false, subresource: 'status', version: groupOf(apiVersion).version }), apiVersion);
    },
    delete(apiVersion, kind, ns, name) { cluster.delete(kindOf(apiVersion, kind), ns, name); },
    get(apiVersion, kind, ns, name) {
      try {
        return out(cluster.get(kindOf(apiVersion, kind), ns, name), apiVersion);
      } catch (err) {
        if (err instanceof KubeApiError && err.code === 404) return undefined;
        throw err;
      }
    },
    list(apiVersion, kind, ns) {
      const r = kindOf(apiVersion, kind);
      return cluster.store.all(`${r.group}/${r.plural}`).map(([, o]) => o).filter((o) => !ns || o.metadata.namespace === ns).map((o) => out(o, apiVersion));
    },
    compact() { cluster.store.compact(); },
    endWatches() { watches.end(); },
    stop,
    async start() { if (!server) await listen(); },
    requestToken(ns, sa, o = {}) { return tokens.mint(cluster, ns, sa, o, false); },
    async close() {
      await stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

