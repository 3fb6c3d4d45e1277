// Delta ADS between the real control plane and the real XdsClient over TLS on loopback.
import * as grpc from '@grpc/grpc-js';
import { afterEach, describe, expect, it } from 'vitest';
import {
  adsService,
  authMetadata,
  codecs,
  controlPlaneClient,
  PodStatusClient,
  podStatusService,
  TYPE_ADDRESS,
  TYPE_AUTHORIZATION,
  TYPE_REQUEST_AUTHN,
  TYPE_SERVICE_ROUTES,
  XdsClient,
  XdsServer,
  type PbDeltaRequest,
  type PbDeltaResponse,
  type PbPodStatusReply,
} from '../../src/xds/index.js';
import type { NackEvent } from '../../src/xds/client.js';
import type { RequestEvent } from '../../src/xds/server.js';
import { ProxyState } from '../../src/state/index.js';
import { NS_FOO, pod, service, startTestControlPlane, waitFor, type TestControlPlane } from '../helpers/xds.js';

const DENY_BAR = `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: deny-bar
  namespace: foo
spec:
  action: DENY
  rules:
    - from:
        - source:
            namespaces: ["bar"]
`;

let env: TestControlPlane | undefined;
const clients: { stop(): Promise<void> | void }[] = [];

afterEach(async () => {
  for (const c of clients.splice(0)) await c.stop();
  await env?.close();
  env = undefined;
});

function client(e: TestControlPlane, node: string, state = new ProxyState(), token?: string): { c: XdsClient; state: ProxyState } {
  const c = new XdsClient({ ...e.conn(node, token), state, backoff: { initialMs: 20, maxMs: 200 } });
  clients.push(c);
  return { c, state };
}

describe('delta ADS over TLS', () => {
  it('syncs every type, ACKs, and is ready only after the first full sync', async () => {
    env = await startTestControlPlane({ 'ns.yaml': NS_FOO, 'web.yaml': pod('web', { ip: '10.1.0.5', node: 'node-a' }) + '---\n' + service('web'), 'authz.yaml': DENY_BAR });
    const requests: PbDeltaRequest[] = [];
    env.cp.xds.on('request', (r: RequestEvent) => requests.push(r.request));
    const { c, state } = client(env, 'node-a');
    expect(c.isReady).toBe(false);
    const types: string[] = [];
    const readyWhenApplied: boolean[] = [];
    c.on('applied', (t) => {
      types.push(t);
      readyWhenApplied.push(c.isReady);
    });
    c.start();
    await c.ready;
    // Ready only after a response of each type was applied.
    expect(new Set(types)).toEqual(new Set([TYPE_ADDRESS, TYPE_AUTHORIZATION, TYPE_SERVICE_ROUTES, TYPE_REQUEST_AUTHN]));
    // Not ready before the last type; ready once it was applied.
    expect(readyWhenApplied.slice(0, 4)).toEqual([false, false, false, true]);
    expect(c.isReady).toBe(true);

    const w = state.workloadByIp('10.1.0.5');
    expect(w?.uid).toBe('Kubernetes//Pod/foo/web');
    expect(w?.tunnelProtocol).toBe('HBONE');
    expect(w?.identity).toBe('spiffe://cluster.local/ns/foo/sa/web');
    expect(w?.services['foo/web.foo.svc.cluster.local']).toEqual([{ servicePort: 80, targetPort: 8080, appProtocol: 'HTTP11' }]);
    expect(state.serviceByVip('10.96.0.10')?.hostname).toBe('web.foo.svc.cluster.local');
    expect(state.policy('foo/deny-bar')?.action).toBe('DENY');
    expect(state.policy('istio-system/istio_converted_static_strict')).toBeDefined();

    // Both responses were ACKed: a request carrying the nonce and no error_detail.
    await waitFor(() => requests.filter((r) => r.responseNonce && !r.errorDetail).length >= 2, 'ACKs');
    const acked = env.cp.xds.streams()[0]!.types;
    expect(acked[TYPE_ADDRESS]!.lastAckNonce).not.toBe('');
    expect(acked[TYPE_AUTHORIZATION]!.lastAckNonce).not.toBe('');
  });

  it('pushes a changed file within a second and removes a deleted resource', async () => {
    env = await startTestControlPlane({ 'ns.yaml': NS_FOO, 'web.yaml': pod('web', { ip: '10.1.0.5', node: 'node-a' }), 'authz.yaml': DENY_BAR });
    const { c, state } = client(env, 'node-a');
    c.start();
    await c.ready;
    const pushes: string[][] = [];
    env.cp.xds.on('push', (p) => pushes.push([...p.resources, ...p.removed.map((r) => `-${r}`)]));

    env.write('db.yaml', pod('db', { ip: '10.1.0.6', node: 'node-b' }));
    // The issue asks for a push within a second of the change.
    await waitFor(() => state.workloadByIp('10.1.0.6') !== undefined, 'the new workload within 1 s', 1000);
    // Only the changed resource was sent.
    expect(pushes).toContainEqual(['Kubernetes//Pod/foo/db']);

    env.remove('authz.yaml');
    await waitFor(() => state.policy('foo/deny-bar') === undefined, 'the policy removal', 1000);
    expect(pushes).toContainEqual(['-foo/deny-bar']);
    expect(state.workloadByIp('10.1.0.5')).toBeDefined();
  });

  it('publishes pods whose IP an agent reports, from a second node too', async () => {
    env = await startTestControlPlane({ 'ns.yaml': NS_FOO, 'pods.yaml': pod('a', { sa: 'sa-a', node: 'node-a' }) + '---\n' + pod('b', { sa: 'sa-b', node: 'node-b' }) });
    const { c, state } = client(env, 'node-a');
    c.start();
    await c.ready;
    expect([...state.workloads()]).toHaveLength(0); // no IP yet: not published

    const ra = new PodStatusClient(env.conn('node-a'));
    const rb = new PodStatusClient(env.conn('node-b'));
    clients.push({ stop: () => ra.close() }, { stop: () => rb.close() });
    const reply = await ra.report([{ namespace: 'foo', name: 'a', ip: '10.2.0.2', phase: 'Running' }, { namespace: 'foo', name: 'ghost', ip: '10.2.0.9', phase: 'Running' }]);
    expect(reply).toEqual({ accepted: 1, unknown: ['foo/ghost'], refused: [] });
    await rb.report([{ namespace: 'foo', name: 'b', ip: '10.3.0.2', phase: 'Running' }]);
    await waitFor(() => state.workloadByIp('10.3.0.2') !== undefined && state.workloadByIp('10.2.0.2') !== undefined, 'both workloads');
    expect(state.workloadByIp('10.2.0.2')?.node).toBe('node-a');
    expect(state.workloadByIp('10.3.0.2')?.node).toBe('node-b');

    // A report replaces the node's previous one: pod a is gone.
    await ra.report([]);
    await waitFor(() => state.workloadByIp('10.2.0.2') === undefined, 'pod a removed');

    // A caller without the token is refused.
    const bad = new PodStatusClient({ ...env.conn('node-b'), token: 'wrong-token-wrong-token' });
    clients.push({ stop: () => bad.close() });
    await expect(bad.report([])).rejects.toMatchObject({ code: 'NM_ERR_AUTH' });
  });

  it('refuses a pod status report about another node with PERMISSION_DENIED, and takes the caller node\'s own', async () => {
    env = await startTestControlPlane({ 'ns.yaml': NS_FOO, 'pods.yaml': pod('a', { node: 'node-b' }) });
    const raw = controlPlaneClient(env.conn('node-b'));
    clients.push({ stop: () => raw.close() });
    const m = podStatusService.Report;
    const report = (node: string) =>
      new Promise<{ err: grpc.ServiceError | null; reply?: PbPodStatusReply }>((resolve) =>
        raw.makeUnaryRequest(m.path, m.requestSerialize, m.responseDeserialize, { node, pods: [{ uid: '', namespace: 'foo', name: 'a', ip: '10.2.0.2', phase: 'Running' }] }, authMetadata(env!.conn('node-b')), (err, reply) =>
          resolve({ err, reply }),
        ),
      );
    const other = await report('node-a');
    expect(other.err?.code).toBe(grpc.status.PERMISSION_DENIED);
    expect(env.cp.pods.pods()).toEqual([]);
    const own = await report('node-b');
    expect(own.err).toBeNull();
    expect(own.reply).toEqual({ accepted: 1, unknown: [], refused: [] });
    expect(env.cp.pods.pods()).toMatchObject([{ namespace: 'foo', name: 'a', node: 'node-b' }]);
  });

  it('NACKs a malformed resource with error_detail naming it and keeps the last good state', async () => {
    // A hand-driven server (the real XdsServer, without the control plane) so the test can
    // serve bytes the control plane never would.
    const xds = new XdsServer({ typeUrls: [TYPE_ADDRESS, TYPE_AUTHORIZATION] });
    env = await startTestControlPlane({ 'ns.yaml': NS_FOO });
    const server = new grpc.Server();
    server.addService(adsService, { DeltaAggregatedResources: xds.handler });
    const { readFileSync } = await import('node:fs');
    const creds = grpc.ServerCredentials.createSsl(null, [{ cert_chain: readFileSync(env.cp.paths.servingCert), private_key: readFileSync(env.cp.paths.servingKey) }], false);
    const port = await new Promise<number>((res, rej) => server.bindAsync('127.0.0.1:0', creds, (e, p) => (e ? rej(e) : res(p))));
    clients.push({ stop: () => void server.forceShutdown() });

    const good = codecs.authorization.encode({ name: 'p', namespace: 'foo', scope: 'NAMESPACE', action: 'DENY', rules: [], dryRun: false });
    xds.setResources(TYPE_AUTHORIZATION, [{ name: 'foo/p', value: good }]);
    const nacks: NackEvent[] = [];
    const serverNacks: string[] = [];
    xds.on('nack', (n) => serverNacks.push(n.message));
    const state = new ProxyState();
    const c = new XdsClient({ address: `127.0.0.1:${port}`, rootCertPem: env.cp.ca.rootCertPem, token: 'x', nodeName: 'node-a', state });
    clients.push(c);
    c.on('nack', (n) => nacks.push(n));
    c.start();
    await c.ready;
    expect(state.policy('foo/p')?.action).toBe('DENY');

    // Action 7 does not exist; the CIDR has 3 bytes.
    const badEnum = codecs.authorization.encode({ name: 'p', namespace: 'foo', scope: 'NAMESPACE', action: 7 as never, rules: [], dryRun: false });
    const badCidr = codecs.authorization.encode({
      name: 'q', namespace: 'foo', scope: 'NAMESPACE', action: 'ALLOW', dryRun: false,
      rules: [{ clauses: [{ matches: [{ sourceIps: [{ address: Buffer.from([10, 0, 0]), length: 8 }] }] }] }],
    });
    const fine = codecs.authorization.encode({ name: 'r', namespace: 'foo', scope: 'GLOBAL', action: 'ALLOW', rules: [{ clauses: [] }], dryRun: false });
    xds.setResources(TYPE_AUTHORIZATION, [
      { name: 'foo/p', value: badEnum },
      { name: 'foo/q', value: badCidr },
      { name: 'foo/r', value: fine },
    ]);
    await waitFor(() => serverNacks.length > 0, 'the NACK');
    expect(serverNacks[0]).toMatch(/foo\/p: action: unknown enum value 7/);
    expect(serverNacks[0]).toMatch(/foo\/q: .*4 or 16 bytes/);
    expect(nacks[0]!.rejected.map((r) => r.name).sort()).toEqual(['foo/p', 'foo/q']);
    // The last good version of foo/p stays; the valid resource of the same response is applied.
    expect(state.policy('foo/p')?.action).toBe('DENY');
    expect(state.policy('foo/q')).toBeUndefined();
    expect(state.policy('foo/r')?.scope).toBe('GLOBAL');
  });

  it('keeps its state while disconnected and resumes with initial_resource_versions', async () => {
    env = await startTestControlPlane({ 'ns.yaml': NS_FOO, 'web.yaml': pod('web', { ip: '10.1.0.5', node: 'node-a' }), 'authz.yaml': DENY_BAR });
    const { c, state } = client(env, 'node-a');
    c.start();
    await c.ready;
    const held = new Map(c.versions(TYPE_ADDRESS));
    expect(held.get('Kubernetes//Pod/foo/web')).toMatch(/^[0-9a-f]{16}$/);

    const requests: PbDeltaRequest[] = [];
    env.cp.xds.on('request', (r) => requests.push(r.request));
    let disconnected = 0;
    c.on('disconnected', () => disconnected++);
    // Drop every stream: the client must reconnect by itself.
    env.cp.xds.closeAll();
    await waitFor(() => disconnected > 0, 'the disconnect');
    expect(state.workloadByIp('10.1.0.5')).toBeDefined(); // last good state kept
    // Change something while it is away.
    env.write('db.yaml', pod('db', { ip: '10.1.0.6', node: 'node-a' }));
    await waitFor(() => state.workloadByIp('10.1.0.6') !== undefined, 'the change after reconnecting');
    const first = requests.find((r) => r.typeUrl === TYPE_ADDRESS && !r.responseNonce)!;
    expect(first.initialResourceVersions).toEqual(Object.fromEntries(held));
    expect(env.cp.xds.streams()).toHaveLength(1);
  });

  it('refuses an unauthenticated stream and is never ready', async () => {
    env = await startTestControlPlane({ 'ns.yaml': NS_FOO });
    const { c } = client(env, 'node-a', new ProxyState(), 'not-the-token-not-the-token');
    c.start();
    await new Promise((r) => setTimeout(r, 300));
    expect(c.isReady).toBe(false);
    expect(c.connected).toBe(false);

    // And a raw call without metadata gets UNAUTHENTICATED.
    const raw = controlPlaneClient(env.conn('node-a'));
    clients.push({ stop: () => raw.close() });
    const m = adsService.DeltaAggregatedResources;
    const call = raw.makeBidiStreamRequest<PbDeltaRequest, PbDeltaResponse>(m.path, m.requestSerialize, m.responseDeserialize, new grpc.Metadata());
    const err = await new Promise<grpc.ServiceError>((resolve) => call.on('error', resolve));
    expect(err.code).toBe(grpc.status.UNAUTHENTICATED);
    // node-a's token with a header naming node-b: the node comes from the token, the claim is refused.
    const md = authMetadata(env.conn('node-a'));
    md.set('x-nodemesh-node', 'node-b');
    const call2 = raw.makeBidiStreamRequest<PbDeltaRequest, PbDeltaResponse>(m.path, m.requestSerialize, m.responseDeserialize, md);
    const err2 = await new Promise<grpc.ServiceError>((resolve) => call2.on('error', resolve));
    expect(err2.code).toBe(grpc.status.PERMISSION_DENIED);
    // The twin: the same token without the header opens a stream, as node-a.
    const md3 = authMetadata(env.conn('node-a'));
    md3.remove('x-nodemesh-node');
    const call3 = raw.makeBidiStreamRequest<PbDeltaRequest, PbDeltaResponse>(m.path, m.requestSerialize, m.responseDeserialize, md3);
    call3.write({ typeUrl: TYPE_ADDRESS });
    const first = await new Promise<PbDeltaResponse>((resolve, reject) => {
      call3.on('data', resolve);
      call3.on('error', reject);
    });
    expect(first.typeUrl).toBe(TYPE_ADDRESS);
    expect(env.cp.xds.streams().map((st) => st.node)).toContain('node-a');
    call3.cancel();
  });
});
