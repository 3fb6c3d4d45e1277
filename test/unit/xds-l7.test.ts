// nodemesh's L7 resources over real delta ADS (the real XdsServer and XdsClient, gRPC over TLS
// on loopback): ServiceRoutes, RequestAuthentication, Authorization.l7_rules and workload
// labels reach ProxyState and leave it, an invalid version is NACKed and its last good one
// kept, a control plane that does not answer the new types cannot stall readiness, and all of
// it survives the agent's snapshot on disk.
import * as grpc from '@grpc/grpc-js';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { decodeSnapshot, encodeSnapshot } from '../../src/agent/persist.js';
import { cidr } from '../../src/net/index.js';
import { ProxyState, type StateChange } from '../../src/state/index.js';
import type { Authorization, RequestAuthentication } from '../../src/state/policy.js';
import type { ServiceRoutes } from '../../src/state/routes.js';
import {
  adsService,
  codecs,
  CONTROL_PLANE_DNS_NAME,
  requestAuthnToProto,
  serviceRoutesToProto,
  TYPE_ADDRESS,
  TYPE_AUTHORIZATION,
  TYPE_REQUEST_AUTHN,
  TYPE_SERVICE_ROUTES,
  XdsClient,
  XdsServer,
  type PbDeltaRequest,
  type PbWorkload,
} from '../../src/xds/index.js';
import type { NackEvent } from '../../src/xds/client.js';
import { authorizationToProto } from '../../src/xds/convert.js';
import { startAdsPeer, type AdsPeer } from '../helpers/ads-peer.js';
import { createTestCa } from '../helpers/certs.js';
import { NS_FOO, pod, startTestControlPlane, waitFor } from '../helpers/xds.js';

const silent = pino({ level: 'silent' });
const ALL_TYPES = [TYPE_ADDRESS, TYPE_AUTHORIZATION, TYPE_SERVICE_ROUTES, TYPE_REQUEST_AUTHN];
const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

/** The real XdsServer behind gRPC over TLS, with a certificate for the control plane's name. */
async function serve(typeUrls: string[]): Promise<{ xds: XdsServer; address: string; rootCertPem: string }> {
  const ca = await createTestCa({ name: 'xds-l7 root' });
  const cert = await ca.issue({ dns: [CONTROL_PLANE_DNS_NAME] });
  const xds = new XdsServer({ typeUrls, logger: silent });
  const server = new grpc.Server();
  server.addService(adsService, { DeltaAggregatedResources: xds.handler });
  const creds = grpc.ServerCredentials.createSsl(null, [{ cert_chain: Buffer.from(cert.certChainPem), private_key: Buffer.from(cert.keyPem) }], false);
  const port = await new Promise<number>((res, rej) => server.bindAsync('127.0.0.1:0', creds, (e, p) => (e ? rej(e) : res(p))));
  cleanups.push(() => void server.forceShutdown());
  return { xds, address: `127.0.0.1:${port}`, rootCertPem: ca.rootPem };
}

function client(at: { address: string; rootCertPem: string | Buffer; token?: string | (() => string) }, extensionWaitMs: number, state = new ProxyState()): { c: XdsClient; state: ProxyState } {
  const c = new XdsClient({ address: at.address, rootCertPem: at.rootCertPem, token: at.token ?? 't', nodeName: 'node-a', state, backoff: { initialMs: 20, maxMs: 200 }, extensionWaitMs, logger: silent });
  cleanups.push(() => c.stop());
  return { c, state };
}

const WEB_KEY = 'foo/web.foo.svc.cluster.local';
const WEB: PbWorkload = {
  uid: 'Kubernetes//Pod/foo/web', name: 'web', namespace: 'foo', addresses: [Buffer.from([10, 1, 0, 5])], network: '', tunnelProtocol: 'HBONE',
  trustDomain: 'cluster.local', serviceAccount: 'web', node: 'node-a', canonicalName: 'web', canonicalRevision: 'v1', workloadType: 'POD',
  workloadName: 'web', authorizationPolicies: [], status: 'HEALTHY', clusterId: 'Kubernetes', services: { [WEB_KEY]: { ports: [{ servicePort: 80, targetPort: 8080, appProtocol: 'HTTP11' }] } },
  labels: { app: 'web', version: 'v1' },
};
const BAR_DB: PbWorkload = { ...WEB, uid: 'Kubernetes//Pod/bar/db', name: 'db', namespace: 'bar', addresses: [Buffer.from([10, 1, 0, 6])], services: {}, labels: { app: 'db' } };

const ROUTES: ServiceRoutes = {
  service: WEB_KEY,
  rules: [
    {
      source: 'HTTPRoute foo/web rule 0',
      matches: [{ path: { type: 'PathPrefix', value: '/v2' }, headers: [], queryParams: [] }],
      filters: [],
      backends: [{ service: WEB_KEY, port: 0, weight: 1, subset: { name: 'v2', labels: { version: 'v2' } }, filters: [] }],
      timeoutMs: 5000,
      retry: { attempts: 2, backoffMs: 25, codes: [503], onConnectFailure: true },
    },
  ],
  tables: [{ port: 80, entries: [{ match: { path: { type: 'PathPrefix', value: '/v2' }, headers: [], queryParams: [] }, rule: 0, hostnames: [] }] }],
  subsets: [{ name: 'v2', labels: { version: 'v2' }, trafficPolicy: { loadBalancer: 'ROUND_ROBIN' } }],
};

const AUTHN: RequestAuthentication = {
  name: 'jwt', namespace: 'foo', scope: 'WORKLOAD_SELECTOR', selector: { app: 'web' },
  jwtRules: [{ issuer: 'https://issuer.example', audiences: ['web'], jwks: '{"keys":[]}', fromHeaders: [], fromParams: [], forwardOriginalToken: false }],
};

const EMPTY = { namespaces: [], notNamespaces: [], principals: [], notPrincipals: [], serviceAccounts: [], notServiceAccounts: [], sourceIps: [], notSourceIps: [], destinationIps: [], notDestinationIps: [], destinationPorts: [], notDestinationPorts: [] };
const AUTHZ: Authorization = {
  name: 'p', namespace: 'foo', scope: 'NAMESPACE', action: 'ALLOW', dryRun: false,
  // The conservative L4 form: the ALLOW rule with HTTP attributes is left out.
  rules: [],
  l7Rules: [
    {
      clauses: [
        {
          matches: [
            {
              ...EMPTY,
              namespaces: [{ exact: 'bar' }],
              http: {
                methods: [{ exact: 'GET' }], notMethods: [], paths: [{ prefix: '/v2/' }], notPaths: [], hosts: [], notHosts: [],
                requestPrincipals: [{ prefix: 'https://issuer.example/' }], notRequestPrincipals: [],
                remoteIps: [cidr(Buffer.from([10, 0, 0, 0]), 8)], notRemoteIps: [],
                headers: [{ key: 'x-team', values: [{ exact: 'a' }], notValues: [] }], claims: [{ key: 'groups', values: [{ exact: 'admins' }], notValues: [] }],
              },
            },
          ],
        },
      ],
    },
  ],
};

const enc = {
  routes: (r: ServiceRoutes) => ({ name: r.service, value: codecs.serviceRoutes.encode(serviceRoutesToProto(r)) }),
  authn: (r: RequestAuthentication) => ({ name: `${r.namespace}/${r.name}`, value: codecs.requestAuthn.encode(requestAuthnToProto(r)) }),
  authz: (a: Authorization) => ({ name: `${a.namespace}/${a.name}`, value: codecs.authorization.encode(authorizationToProto(a)) }),
  workload: (w: PbWorkload) => ({ name: w.uid, value: codecs.address.encode({ workload: w }) }),
};

function load(xds: XdsServer): void {
  xds.setResources(TYPE_ADDRESS, [enc.workload(WEB), enc.workload(BAR_DB)]);
  xds.setResources(TYPE_AUTHORIZATION, [enc.authz(AUTHZ)]);
  xds.setResources(TYPE_SERVICE_ROUTES, [enc.routes(ROUTES)]);
  xds.setResources(TYPE_REQUEST_AUTHN, [enc.authn(AUTHN)]);
}

const BAD_ROUTES = { name: WEB_KEY, value: codecs.serviceRoutes.encode({ ...serviceRoutesToProto(ROUTES), rules: [{ ...serviceRoutesToProto(ROUTES).rules![0]!, backends: [{ service: WEB_KEY, port: 0, weight: 2_000_000 }] }] }) };
const BAD_AUTHN = { name: 'foo/jwt', value: codecs.requestAuthn.encode({ ...requestAuthnToProto(AUTHN), jwtRules: [{ ...requestAuthnToProto(AUTHN).jwtRules![0]!, jwks: 'not json' }] }) };

describe('L7 resources over delta ADS', () => {
  it('delivers ServiceRoutes, RequestAuthentication, l7Rules and labels into ProxyState, and removes them', async () => {
    const srv = await serve(ALL_TYPES);
    load(srv.xds);
    const { c, state } = client(srv, 600_000);
    const changes: StateChange[] = [];
    state.on('change', (ch) => changes.push(ch));
    c.start();
    await c.ready;

    expect(state.routesOf(WEB_KEY)).toEqual(ROUTES);
    expect(state.routesOf('foo/other.foo.svc.cluster.local')).toBeUndefined();
    expect([...state.requestAuthentications()]).toEqual([AUTHN]);
    expect(state.requestAuthn('foo/jwt')).toEqual(AUTHN);
    expect(state.policy('foo/p')).toEqual(AUTHZ);
    expect(state.workloadByUid(WEB.uid)?.labels).toEqual({ app: 'web', version: 'v1' });
    expect(state.snapshot()).toMatchObject({ routes: [ROUTES], requestAuthns: [AUTHN] });
    expect(changes.flatMap((ch) => ch.routes.upserted)).toEqual([WEB_KEY]);
    expect(changes.flatMap((ch) => ch.requestAuthns.upserted)).toEqual(['foo/jwt']);

    srv.xds.setResources(TYPE_SERVICE_ROUTES, []);
    srv.xds.setResources(TYPE_REQUEST_AUTHN, []);
    await waitFor(() => state.routesOf(WEB_KEY) === undefined && state.requestAuthn('foo/jwt') === undefined, 'the removals');
    expect(changes.flatMap((ch) => ch.routes.removed)).toEqual([WEB_KEY]);
    expect(changes.flatMap((ch) => ch.requestAuthns.removed)).toEqual(['foo/jwt']);
    expect(state.policy('foo/p')).toEqual(AUTHZ); // the other types are untouched
  });

  it('NACKs an invalid version, keeps the last good one and records the rejection; a valid one lifts it', async () => {
    const srv = await serve(ALL_TYPES);
    load(srv.xds);
    const { c, state } = client(srv, 600_000);
    const nacks: NackEvent[] = [];
    c.on('nack', (n) => nacks.push(n));
    c.start();
    await c.ready;
    const web = state.workloadByUid(WEB.uid)!;
    const db = state.workloadByUid(BAR_DB.uid)!;
    expect(state.policyView(web).rejected).toEqual([]);

    srv.xds.setResources(TYPE_SERVICE_ROUTES, [BAD_ROUTES]);
    srv.xds.setResources(TYPE_REQUEST_AUTHN, [BAD_AUTHN]);
    await waitFor(() => nacks.length === 2, 'both NACKs');
    expect(nacks.map((n) => [n.typeUrl, n.rejected.map((r) => r.reason)])).toEqual([
      [TYPE_SERVICE_ROUTES, [expect.stringMatching(/^rules\[0\]\.backends\[0\]\.weight: /)]],
      [TYPE_REQUEST_AUTHN, [expect.stringMatching(/^jwt_rules\[0\]\.jwks: /)]],
    ]);
    expect(srv.xds.streams()[0]!.types[TYPE_SERVICE_ROUTES]!.lastNack?.message).toMatch(/weight/);
    // The last good versions stay.
    expect(state.routesOf(WEB_KEY)).toEqual(ROUTES);
    expect(state.requestAuthn('foo/jwt')).toEqual(AUTHN);
    expect(state.rejected()).toEqual([
      { kind: 'routes', name: WEB_KEY, reason: expect.stringMatching(/weight/) },
      { kind: 'requestAuthentication', name: 'foo/jwt', reason: expect.stringMatching(/jwks/), scope: 'WORKLOAD_SELECTOR', namespace: 'foo' },
    ]);
    // Routes only steer traffic: no verdict waits on them. The RequestAuthentication bears on
    // its namespace's workloads, and only on them.
    expect(state.policyView(web).rejected.map((r) => r.kind)).toEqual(['requestAuthentication']);
    expect(state.policyView(db).rejected).toEqual([]);
    // The agent resumes from the rejected version, so the server resends only a newer one.
    expect(c.versions(TYPE_SERVICE_ROUTES).get(WEB_KEY)).toBe(srv.xds.versions(TYPE_SERVICE_ROUTES).get(WEB_KEY));

    const fixed = { ...ROUTES, rules: [{ ...ROUTES.rules[0]!, timeoutMs: 1000 }] };
    srv.xds.setResources(TYPE_SERVICE_ROUTES, [enc.routes(fixed)]);
    srv.xds.setResources(TYPE_REQUEST_AUTHN, []);
    await waitFor(() => state.rejected().length === 0, 'the rejections lifted');
    expect(state.routesOf(WEB_KEY)).toEqual(fixed);
    expect(state.requestAuthn('foo/jwt')).toBeUndefined();
  });

  it('survives the snapshot on disk: restored into a new agent without a control plane, rejections included', async () => {
    const srv = await serve(ALL_TYPES);
    load(srv.xds);
    const first = client(srv, 600_000);
    first.c.start();
    await first.c.ready;
    srv.xds.setResources(TYPE_SERVICE_ROUTES, [BAD_ROUTES]);
    await waitFor(() => first.state.rejected().length === 1, 'the rejection');
    const text = encodeSnapshot(first.c.snapshot(), 'node-a');
    await first.c.stop();

    const second = client({ address: '127.0.0.1:1', rootCertPem: srv.rootCertPem }, 600_000);
    const restored = second.c.restore(decodeSnapshot(text, 'node-a'));
    expect(restored.resources).toBe(5); // two workloads, the policy, the routes' last good version, the RequestAuthentication
    expect(restored.rejected).toEqual([]); // every held resource validates again
    const s = second.state;
    expect(s.routesOf(WEB_KEY)).toEqual(ROUTES);
    expect(s.requestAuthn('foo/jwt')).toEqual(AUTHN);
    expect(s.policy('foo/p')).toEqual(AUTHZ);
    expect(s.workloadByUid(WEB.uid)?.labels).toEqual(WEB.labels);
    expect(s.rejected()).toMatchObject([{ kind: 'routes', name: WEB_KEY }]);
    expect(second.c.versions(TYPE_REQUEST_AUTHN)).toEqual(first.c.versions(TYPE_REQUEST_AUTHN));
  });
});

describe('the control plane', () => {
  it('serves the L7 types and carries each pod\'s labels to the agent', async () => {
    const env = await startTestControlPlane({ 'ns.yaml': NS_FOO, 'web.yaml': pod('web', { ip: '10.1.0.5', node: 'node-a', labels: { app: 'web', version: 'v2' } }) });
    cleanups.push(() => env.close());
    const { c, state } = client(env.conn('node-a'), 600_000);
    const applied: string[] = [];
    c.on('applied', (t) => applied.push(t));
    c.start();
    await c.ready;
    expect(new Set(applied)).toEqual(new Set(ALL_TYPES));
    expect(state.workloadByIp('10.1.0.5')?.labels).toEqual({ app: 'web', version: 'v2' });
  });
});

describe('readiness against a control plane without the L7 types', () => {
  it('waits for the L7 types a server answers, then is ready', async () => {
    const srv = await serve(ALL_TYPES);
    load(srv.xds);
    const { c } = client(srv, 600_000);
    const readyWhenApplied: Array<[string, boolean]> = [];
    c.on('applied', (t) => readyWhenApplied.push([t, c.isReady]));
    c.start();
    await c.ready;
    expect(readyWhenApplied).toEqual(ALL_TYPES.map((t, i) => [t, i === ALL_TYPES.length - 1]));
  });

  it('is ready at once with a nodemesh server that does not serve them (it answers them empty)', async () => {
    const srv = await serve([TYPE_ADDRESS, TYPE_AUTHORIZATION]);
    srv.xds.setResources(TYPE_ADDRESS, [enc.workload(WEB)]);
    // A wait of 10 minutes: ready within the test's time means it did not wait.
    const { c, state } = client(srv, 600_000);
    const applied: string[] = [];
    c.on('applied', (t) => applied.push(t));
    c.start();
    await c.ready;
    expect(applied).toEqual(ALL_TYPES);
    expect(state.workloadByUid(WEB.uid)).toBeDefined();
    expect([...state.serviceRoutes()]).toEqual([]);
  });

  it('is ready after extensionWaitMs when the server never answers them, and applies them when they come', async () => {
    const peer: AdsPeer = await startAdsPeer();
    cleanups.push(() => peer.close());
    const { c, state } = client(peer, 100);
    const readyWhenApplied: boolean[] = [];
    c.on('applied', () => readyWhenApplied.push(c.isReady));
    c.start();
    expect(await peer.waitOpen(5000)).toBe(true);
    const subs: PbDeltaRequest[] = [];
    while (subs.length < ALL_TYPES.length) {
      const r = await peer.next(5000);
      if (typeof r === 'string') throw new Error(`no subscription: ${r}`);
      subs.push(r);
    }
    expect(subs.map((r) => r.typeUrl)).toEqual(ALL_TYPES);
    // Like a server that knows only Istio's types: it answers those and ignores the rest.
    const respond = (typeUrl: string, resources: { name: string; value: Buffer }[], nonce: string) =>
      peer.sendRaw(codecs.deltaResponse.encode({ typeUrl, nonce, systemVersionInfo: '', removedResources: [], resources: resources.map((r) => ({ name: r.name, version: '1', resource: { type_url: typeUrl, value: r.value } })) }));
    respond(TYPE_ADDRESS, [enc.workload(WEB)], 'a1');
    respond(TYPE_AUTHORIZATION, [], 'b1');
    await c.ready;
    // Neither L4 response made it ready: the wait for the L7 types did.
    expect(readyWhenApplied).toEqual([false, false]);
    expect(state.workloadByUid(WEB.uid)).toBeDefined();

    respond(TYPE_SERVICE_ROUTES, [enc.routes(ROUTES)], 'r1');
    await waitFor(() => state.routesOf(WEB_KEY) !== undefined, 'the late routes');
    expect(state.routesOf(WEB_KEY)).toEqual(ROUTES);
  });
});
