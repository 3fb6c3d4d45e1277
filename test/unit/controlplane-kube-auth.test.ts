// Node identity on Kubernetes, end to end: a real ControlPlane reading the stand-in API server
// (test/helpers/kube-apiserver.ts), real agents' clients (XdsClient, CaClient, PodStatusClient)
// over gRPC + TLS, each presenting its pod's projected ServiceAccount token. The token proves the
// node of the pod it is bound to (TokenReview, then the pod); certificates and reports only for
// pods the API places on that node; every refused token next to the accepted one; the API going
// away keeps checked agents working within the cache bound and refuses new ones.
import { existsSync, mkdtempSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { controlPlaneCommand } from '../../src/cli/controlplane.js';
import { ControlPlane, type ControlPlaneOptions } from '../../src/controlplane/controlplane.js';
import { mintNodeToken } from '../../src/controlplane/node-credentials.js';
import { CaClient, createCsr, generateKeyPair } from '../../src/identity/index.js';
import { summarizeCert } from '../../src/identity/x509.js';
import { ProxyState } from '../../src/state/index.js';
import { PodStatusClient, readTokenFile, XdsClient, type ControlPlaneConnection, type PodStatus } from '../../src/xds/index.js';
import { startKubeStandIn, type KubeObject, type KubeStandIn } from '../helpers/kube-apiserver.js';
import { AGENT_NS, agentPod, agentToken, ensure, projectedToken } from '../helpers/kube-agent.js';
import { waitFor } from '../helpers/xds.js';

const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

function captureLog(): { logger: pino.Logger; lines: Record<string, unknown>[] } {
  const lines: Record<string, unknown>[] = [];
  return { logger: pino({ level: 'warn' }, { write: (s: string) => void lines.push(JSON.parse(s) as Record<string, unknown>) }), lines };
}

function pod(name: string, node: string | undefined, ip?: string): KubeObject {
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name, namespace: 'foo', labels: { app: name } },
    spec: { ...(node ? { nodeName: node } : {}), serviceAccountName: name, containers: [{ name: 'app', image: 'nginx' }] },
    status: ip ? { phase: 'Running', podIP: ip, podIPs: [{ ip }], conditions: [{ type: 'Ready', status: 'True' }] } : { phase: 'Pending' },
  };
}

interface Env {
  api: KubeStandIn;
  cp: ControlPlane;
  stateDir: string;
  lines: Record<string, unknown>[];
  conn(node: string, token: string): ControlPlaneConnection;
  ca(node: string, token: string): CaClient;
  reporter(node: string, token: string): PodStatusClient;
  /** TokenReviews the control plane sent. */
  reviews(): number;
}

/** web (sa web) on node-a, db (sa db) on node-b, both Running with IPs, in ambient namespace foo. */
async function startEnv(opts: Partial<ControlPlaneOptions> = {}): Promise<Env> {
  const api = await startKubeStandIn({ bookmarkEveryMs: 200 });
  cleanups.push(() => api.close());
  api.create({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'foo', labels: { 'nodemesh.io/dataplane-mode': 'ambient' } } });
  for (const sa of ['web', 'db', 'api']) ensure(api, { apiVersion: 'v1', kind: 'ServiceAccount', metadata: { name: sa, namespace: 'foo' } });
  api.create(pod('web', 'node-a', '10.1.0.5'));
  api.create(pod('db', 'node-b', '10.2.0.6'));
  const stateDir = mkdtempSync(join(tmpdir(), 'nodemesh-cp-kube-auth-'));
  cleanups.push(() => rmSync(stateDir, { recursive: true, force: true }));
  const { logger, lines } = captureLog();
  const cp = await ControlPlane.start({
    kubernetes: { kubeconfig: api.kubeconfigPath, rediscoverMs: 200, backoffMs: 50, maxBackoffMs: 300, debounceMs: 10 },
    stateDir,
    listen: '127.0.0.1:0',
    admin: '127.0.0.1:0',
    logger,
    ...opts,
  });
  cleanups.push(() => cp.stop());
  const conn = (node: string, token: string): ControlPlaneConnection => ({ address: cp.address, rootCertPem: cp.ca.rootCertPem, token, nodeName: node });
  return {
    api,
    cp,
    stateDir,
    lines,
    conn,
    ca: (node, token) => {
      const c = new CaClient(conn(node, token));
      cleanups.push(() => c.close());
      return c;
    },
    reporter: (node, token) => {
      const c = new PodStatusClient(conn(node, token));
      cleanups.push(() => c.close());
      return c;
    },
    reviews: () => api.requests.filter((r) => r.method === 'POST' && r.path.startsWith('/apis/authentication.k8s.io/v1/tokenreviews')).length,
  };
}

const csrFor = async (sa: string) => createCsr(await generateKeyPair(), `spiffe://cluster.local/ns/foo/sa/${sa}`);
const running = (name: string, ip: string): PodStatus => ({ namespace: 'foo', name, ip, phase: 'Running' });
const UNAUTHENTICATED = { details: { grpcCode: 16 } };

describe('agents on Kubernetes prove their node with their pod\'s ServiceAccount token', () => {
  it('gives node-a\'s agent xDS as node-a and certificates for node-a\'s pods, and refuses it one for a pod on node-b', async () => {
    const env = await startEnv();
    const token = await agentToken(env.api, 'node-a');
    // xDS: the stream is served as node-a, proven by the token (not by the header alone).
    const state = new ProxyState();
    const xds = new XdsClient({ ...env.conn('node-a', token), state });
    cleanups.push(() => xds.stop());
    xds.start();
    await xds.ready;
    expect(env.cp.xds.streams().map((s) => s.node)).toEqual(['node-a']);
    expect(state.workloadByIp('10.1.0.5')).toMatchObject({ name: 'web', node: 'node-a' });
    // A certificate for web, which the API places on node-a, is issued ...
    const ca = env.ca('node-a', token);
    const chain = await ca.createCertificate(await csrFor('web'), 3600);
    expect(summarizeCert(chain[0]!).subjectAltNames).toEqual(['URI:spiffe://cluster.local/ns/foo/sa/web']);
    // ... and one for db, which runs on node-b, is refused, saying where it runs, and logged.
    await expect(ca.createCertificate(await csrFor('db'), 3600)).rejects.toMatchObject({
      code: 'NM_ERR_CA',
      details: { grpcCode: 7 },
      message: expect.stringMatching(/places no pod of service account foo\/db on node node-a \(its pods are on node node-b\)/),
    });
    // An identity no pod has is refused too.
    await expect(ca.createCertificate(await csrFor('ghost'), 3600)).rejects.toMatchObject({ details: { grpcCode: 7 }, message: expect.stringMatching(/the API has no running pod of it/) });
    expect(env.lines).toContainEqual(expect.objectContaining({ msg: 'refused a certificate request', node: 'node-a' }));
    // The same agent claiming to be node-b is refused before anything is read.
    await expect(env.ca('node-b', token).createCertificate(await csrFor('db'), 3600)).rejects.toMatchObject({ details: { grpcCode: 7 } });
    expect(env.lines).toContainEqual(expect.objectContaining({ msg: 'refused a certificate request', node: 'node-a', claimedNode: 'node-b' }));
    // The twin: node-b's own agent gets db's certificate.
    await expect(env.ca('node-b', await agentToken(env.api, 'node-b')).createCertificate(await csrFor('db'), 3600)).resolves.toHaveLength(2);
  });

  it('signs for a pod the API has scheduled to the node before its IP is known, and not for one not scheduled yet', async () => {
    const env = await startEnv();
    const ca = env.ca('node-a', await agentToken(env.api, 'node-a'));
    env.api.create(pod('api', undefined));
    await waitFor(() => env.cp.source.snapshot().pods.some((p) => p.metadata.name === 'api'), 'the pending pod');
    await expect(ca.createCertificate(await csrFor('api'), 3600)).rejects.toMatchObject({ details: { grpcCode: 7 }, message: expect.stringMatching(/\(its pods are on \(not scheduled\)\)/) });
    // The scheduler binds it to node-a (no IP yet: the agent asks at CNI ADD).
    env.api.update({ ...env.api.get('v1', 'Pod', 'foo', 'api')!, spec: { ...(env.api.get('v1', 'Pod', 'foo', 'api')!.spec as object), nodeName: 'node-a' } });
    await waitFor(() => env.cp.source.snapshot().pods.some((p) => p.metadata.name === 'api' && p.spec.nodeName === 'node-a'), 'the binding');
    await expect(ca.createCertificate(await csrFor('api'), 3600)).resolves.toHaveLength(2);
  });

  it('takes reports only about the node\'s own pods, with IPs in the Node\'s pod CIDR or the ones the API gives them', async () => {
    const env = await startEnv();
    env.api.create(pod('api', 'node-a')); // scheduled, no IP in the API yet
    await waitFor(() => env.cp.source.snapshot().pods.length === 3, 'the pods');
    const token = await agentToken(env.api, 'node-a', { podCidr: '10.1.0.0/16' });
    const reply = await env.reporter('node-a', token).report([running('web', '10.1.0.5'), running('db', '10.2.0.6'), running('api', '10.9.0.7')]);
    expect(reply.accepted).toBe(1);
    expect(reply.refused).toEqual([
      'foo/db: the Kubernetes API places this pod on node node-b, not on node-a',
      "foo/api: ip 10.9.0.7 is outside node node-a's pod CIDRs (10.1.0.0/16)",
    ]);
    expect(env.lines).toContainEqual(expect.objectContaining({ msg: 'refused a pod status entry', node: 'node-a', pod: 'foo/db' }));
    // The twin: api with an IP inside node-a's Node spec.podCIDR is taken.
    expect(await env.reporter('node-a', token).report([running('web', '10.1.0.5'), running('api', '10.1.0.7')])).toMatchObject({ accepted: 2, refused: [] });
  });

  it('derives the node from the bound pod when the review names none (Kubernetes before 1.30)', async () => {
    const env = await startEnv();
    // Minted before the pod was scheduled, so the token (and the review) carry no node.
    const token = await agentToken(env.api, 'node-a', { unscheduled: true });
    await expect(env.ca('node-a', token).createCertificate(await csrFor('web'), 3600)).rejects.toMatchObject({ ...UNAUTHENTICATED, message: expect.stringMatching(/is not scheduled to a node yet/) });
    const agent = env.api.get('v1', 'Pod', AGENT_NS, 'nodemesh-agent-node-a')!;
    env.api.update({ ...agent, spec: { ...(agent.spec as object), nodeName: 'node-a' } });
    await expect(env.ca('node-a', token).createCertificate(await csrFor('web'), 3600)).resolves.toHaveLength(2);
    expect(env.api.requests.some((r) => r.method === 'GET' && r.path.startsWith(`/api/v1/namespaces/${AGENT_NS}/pods/nodemesh-agent-node-a`))).toBe(true);
  });
});

describe('tokens that prove no node are refused, each beside the accepted one', () => {
  it('refuses a token for the API server\'s audience, an expired one, one for a deleted pod, one not bound to a pod, and an HMAC node token', async () => {
    const env = await startEnv();
    const name = agentPod(env.api, 'node-a');
    const csr = await csrFor('web');
    const tryToken = (token: string) => env.ca('node-a', token).createCertificate(csr, 3600);
    // The accepted case, in this same setup.
    await expect(tryToken(await projectedToken(env.api, name))).resolves.toHaveLength(2);
    // The default audience (the API server's own, what an automounted token has).
    await expect(tryToken(await projectedToken(env.api, name, { audiences: [] }))).rejects.toMatchObject({ ...UNAUTHENTICATED, message: expect.stringMatching(/refused the agent's ServiceAccount token \(audience nodemesh\).*audiences/) });
    // Expired an hour ago.
    await expect(tryToken(await projectedToken(env.api, name, { expirationSeconds: 600, issuedAt: new Date(Date.now() - 2 * 3600_000) }))).rejects.toMatchObject({ ...UNAUTHENTICATED, message: expect.stringMatching(/expired/) });
    // Not bound to a pod: a TokenRequest without boundObjectRef.
    await expect(tryToken((await env.api.requestToken(AGENT_NS, 'nodemesh-agent', { audiences: ['nodemesh'] })).token)).rejects.toMatchObject({ ...UNAUTHENTICATED, message: expect.stringMatching(/not bound to a pod/) });
    // A node token of the directory mode: refused without asking the API.
    const before = env.reviews();
    await expect(tryToken(mintNodeToken('x'.repeat(43), { node: 'node-a', podCidrs: ['10.0.0.0/8'] }))).rejects.toMatchObject({ code: 'NM_ERR_AUTH', ...UNAUTHENTICATED, message: expect.stringMatching(/directory mode/) });
    await expect(tryToken(env.cp.adminToken)).rejects.toMatchObject(UNAUTHENTICATED);
    expect(env.reviews()).toBe(before);
    expect(() => env.cp.nodeToken('node-a', ['10.0.0.0/8'])).toThrow(/ServiceAccount token/);
    // The pod the token is bound to is deleted: its token proves nothing any more.
    const doomed = await agentToken(env.api, 'node-a', { pod: 'nodemesh-agent-old' });
    env.api.delete('v1', 'Pod', AGENT_NS, 'nodemesh-agent-old');
    await expect(tryToken(doomed)).rejects.toMatchObject({ ...UNAUTHENTICATED, message: expect.stringMatching(/invalidated/) });
    expect(env.lines).toContainEqual(expect.objectContaining({ msg: 'refused a certificate request', reason: expect.stringMatching(/invalidated/) }));
    // And the accepted case still is.
    await expect(tryToken(await projectedToken(env.api, name))).resolves.toHaveLength(2);
  });

  it('takes only the agents\' ServiceAccount (--agent-service-account, default nodemesh-system/nodemesh-agent)', async () => {
    const env = await startEnv();
    const csr = await csrFor('web');
    // Another ServiceAccount's pod on node-a, with a perfectly valid bound token.
    const other = await agentToken(env.api, 'node-a', { pod: 'intruder', serviceAccount: 'intruder' });
    await expect(env.ca('node-a', other).createCertificate(csr, 3600)).rejects.toMatchObject({ ...UNAUTHENTICATED, message: expect.stringMatching(/ServiceAccount nodemesh-system\/intruder's, not the agents' \(nodemesh-system\/nodemesh-agent/) });
    await expect(env.ca('node-a', await agentToken(env.api, 'node-a')).createCertificate(csr, 3600)).resolves.toHaveLength(2);
    expect(env.cp.agentServiceAccount).toBe('nodemesh-system/nodemesh-agent');

    // Configured the other way round, the same two tokens swap verdicts.
    const env2 = await startEnv({ agentAuth: { serviceAccount: 'nodemesh-system/intruder' } });
    const mine = await agentToken(env2.api, 'node-a', { pod: 'intruder', serviceAccount: 'intruder' });
    await expect(env2.ca('node-a', mine).createCertificate(csr, 3600)).resolves.toHaveLength(2);
    await expect(env2.ca('node-a', await agentToken(env2.api, 'node-a')).createCertificate(csr, 3600)).rejects.toMatchObject(UNAUTHENTICATED);
  });
});

describe('TokenReview results', () => {
  it('are reused for an agent\'s calls: one review for its stream, certificate and report calls', async () => {
    const env = await startEnv();
    const token = await agentToken(env.api, 'node-a');
    // At once, as an agent starting up makes them.
    const xds = new XdsClient({ ...env.conn('node-a', token), state: new ProxyState() });
    cleanups.push(() => xds.stop());
    xds.start();
    await Promise.all([xds.ready, env.ca('node-a', token).createCertificate(await csrFor('web'), 3600), env.reporter('node-a', token).report([running('web', '10.1.0.5')])]);
    for (let i = 0; i < 3; i++) await env.ca('node-a', token).createCertificate(await csrFor('web'), 3600);
    expect(env.reviews()).toBe(1);
    // Another token (a rotated one, or another agent) is reviewed on its own.
    await env.ca('node-a', await agentToken(env.api, 'node-a', { pod: 'nodemesh-agent-2' })).createCertificate(await csrFor('web'), 3600);
    expect(env.reviews()).toBe(2);
  });

  it('let checked agents work while the API is away, within the cache bound, and refuse new ones (fail closed)', async () => {
    const env = await startEnv({ agentAuth: { cacheMs: 1500 } });
    const tokenA = await agentToken(env.api, 'node-a');
    const tokenB = await agentToken(env.api, 'node-b');
    const caA = env.ca('node-a', tokenA);
    await caA.createCertificate(await csrFor('web'), 3600);
    const state = new ProxyState();
    const xds = new XdsClient({ ...env.conn('node-a', tokenA), state });
    cleanups.push(() => xds.stop());
    xds.start();
    await xds.ready;

    await env.api.stop();
    // node-a was checked: it keeps getting certificates, and its open stream stays.
    await expect(caA.createCertificate(await csrFor('web'), 3600)).resolves.toHaveLength(2);
    // node-b was never checked: refused, retryable, saying why.
    await expect(env.ca('node-b', tokenB).createCertificate(await csrFor('db'), 3600)).rejects.toMatchObject({
      details: { grpcCode: 14 },
      message: expect.stringMatching(/cannot check the agent's ServiceAccount token: the TokenReview at https:\/\/127\.0\.0\.1:\d+ failed .*refused until the Kubernetes API answers/),
    });
    expect(env.lines).toContainEqual(expect.objectContaining({ msg: 'refused a certificate request', reason: expect.stringMatching(/cannot check/) }));
    // Past the cache bound node-a is refused too: nothing is trusted unchecked for longer.
    let refused: unknown;
    for (const until = Date.now() + 10_000; refused === undefined && Date.now() < until; ) {
      refused = await caA.createCertificate(await csrFor('web'), 3600).then(() => undefined, (e: unknown) => e);
      if (refused === undefined) await new Promise((r) => setTimeout(r, 100));
    }
    expect(refused).toMatchObject({ details: { grpcCode: 14 } });
    expect(state.workloadByIp('10.1.0.5')).toBeDefined(); // the stream opened before was not cut

    // The API back: both are taken again.
    await env.api.start();
    await expect(env.ca('node-b', tokenB).createCertificate(await csrFor('db'), 3600)).resolves.toHaveLength(2);
    await expect(caA.createCertificate(await csrFor('web'), 3600)).resolves.toHaveLength(2);
  });
});

describe('the agent\'s token file (--token-file at the projected token)', () => {
  it('is read again for every call, so a token kubelet rotated is used at once', async () => {
    const env = await startEnv();
    const name = agentPod(env.api, 'node-a');
    const file = join(env.stateDir, 'token');
    writeFileSync(file, (await projectedToken(env.api, name, { audiences: [] })) + '\n'); // the wrong audience first
    const ca = new CaClient({ ...env.conn('node-a', ''), token: readTokenFile(file) });
    cleanups.push(() => ca.close());
    await expect(ca.createCertificate(await csrFor('web'), 3600)).rejects.toMatchObject(UNAUTHENTICATED);
    writeFileSync(file, (await projectedToken(env.api, name)) + '\n');
    await expect(ca.createCertificate(await csrFor('web'), 3600)).resolves.toHaveLength(2);
  });

  it('gives the last good token while the file is missing or empty, and throws only when none was ever read', () => {
    const dir = mkdtempSync(join(tmpdir(), 'nodemesh-token-'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const file = join(dir, 'token');
    expect(() => readTokenFile(file)()).toThrow(/ENOENT/);
    writeFileSync(file, '');
    expect(() => readTokenFile(file)()).toThrow(/is empty/);
    const read = readTokenFile(file);
    writeFileSync(file, 'first\n');
    expect(read()).toBe('first');
    writeFileSync(file, 'second\n');
    expect(read()).toBe('second');
    writeFileSync(file, '');
    expect(read()).toBe('second');
    unlinkSync(file);
    expect(read()).toBe('second');
  });
});

describe('nodemesh control-plane on Kubernetes: no node secret', () => {
  it('makes no node secret, and refuses --node-secret with --kubeconfig and --agent-service-account with --config', async () => {
    const env = await startEnv();
    expect(env.cp.paths.nodeSecret).toBeUndefined();
    expect(existsSync(join(env.stateDir, 'node-secret'))).toBe(false);
    await expect(controlPlaneCommand.run(['--kubeconfig', env.api.kubeconfigPath, '--node-secret', join(env.stateDir, 'x')])).rejects.toMatchObject({ code: 'NM_ERR_USAGE', message: expect.stringMatching(/--node-secret is for the directory mode/) });
    await expect(controlPlaneCommand.run(['--config', env.stateDir, '--agent-service-account', 'a/b'])).rejects.toMatchObject({ code: 'NM_ERR_USAGE', message: expect.stringMatching(/Kubernetes mode/) });
    await expect(ControlPlane.start({ kubernetes: { kubeconfig: env.api.kubeconfigPath }, nodeSecretFile: join(env.stateDir, 'x'), stateDir: env.stateDir })).rejects.toMatchObject({ code: 'NM_ERR_USAGE' });
    await expect(ControlPlane.start({ kubernetes: { kubeconfig: env.api.kubeconfigPath }, agentAuth: { serviceAccount: 'not a name' }, stateDir: env.stateDir, listen: '127.0.0.1:0', admin: '127.0.0.1:0' })).rejects.toMatchObject({ code: 'NM_ERR_USAGE', message: expect.stringMatching(/<namespace>\/<serviceaccount>/) });
  });
});
