// The agent's last good xDS state on disk, against the real control plane (real gRPC, TLS, CA):
// saved 0600 after applied updates, restored with no control plane to the same decisions, a
// corrupt file reported by name and treated as none (deny until xDS arrives), a restored
// snapshot reconciled on reconnect without the state ever going empty, and rejections that
// persist and lift when the server drops the resource.
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { ControlPlaneSource } from '../../src/agent/cp-source.js';
import { decodeSnapshot, encodeSnapshot, SNAPSHOT_FORMAT } from '../../src/agent/persist.js';
import { adsService, codecs, TYPE_ADDRESS, TYPE_AUTHORIZATION, XdsServer, type PbDeltaRequest, type PbWorkload } from '../../src/xds/index.js';
import type { RequestEvent } from '../../src/xds/server.js';
import { createTestCa } from '../helpers/certs.js';
import { NS_FOO, pod, startTestControlPlane, waitFor, type TestControlPlane } from '../helpers/xds.js';

const DENY_BAR = `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: deny-bar, namespace: foo }
spec:
  selector: { matchLabels: { app: web } }
  action: DENY
  rules:
    - from: [{ source: { namespaces: ["bar"] } }]
`;

const FROM_BAR = { srcPrincipal: 'spiffe://cluster.local/ns/bar/sa/x', srcIp: '10.2.0.9', dstIp: '10.1.0.5', dstPort: 8080 };
const FROM_QUX = { ...FROM_BAR, srcPrincipal: 'spiffe://cluster.local/ns/qux/sa/x' };

function logger(): { log: pino.Logger; lines: string[] } {
  const lines: string[] = [];
  return { log: pino({ level: 'info' }, { write: (s: string) => void lines.push(s) }), lines };
}

let env: TestControlPlane | undefined;
const dirs: string[] = [];
const sources: ControlPlaneSource[] = [];
const closers: (() => void)[] = [];
afterEach(async () => {
  for (const s of sources.splice(0)) await s.stop();
  for (const c of closers.splice(0)) c();
  await env?.close();
  env = undefined;
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function stateDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'nodemesh-persist-'));
  dirs.push(d);
  return d;
}

function source(conn: ReturnType<TestControlPlane['conn']>, dir: string, log = pino({ level: 'silent' })): ControlPlaneSource {
  const s = new ControlPlaneSource({ ...conn }, log, 'round-robin', dir);
  sources.push(s);
  return s;
}

describe('the xDS snapshot on disk', () => {
  it('is saved 0600 once synced and restored with no control plane to the same decisions', async () => {
    env = await startTestControlPlane({ 'ns.yaml': NS_FOO, 'web.yaml': pod('web', { ip: '10.1.0.5', node: 'node-a' }), 'authz.yaml': DENY_BAR });
    const dir = stateDir();
    const file = join(dir, 'xds-snapshot.json');
    const first = source(env.conn('node-a'), dir);
    expect(first.restore()).toEqual({ resources: 0, certificates: [] });
    expect(first.serving).toBe(false);
    first.start(() => undefined);
    await first.xds.ready;
    await waitFor(() => existsSync(file), 'the snapshot file');
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(first.authorize(FROM_BAR)).toMatchObject({ allowed: false, policy: 'foo/deny-bar' });
    expect(first.authorize(FROM_QUX).allowed).toBe(true);
    const conn = env.conn('node-a');
    await first.stop();
    await env.close();
    env = undefined;

    // The control plane is gone: a new agent serves what the last one saved.
    const { log, lines } = logger();
    const second = source(conn, dir, log);
    expect(second.restore().resources).toBeGreaterThanOrEqual(3); // the workload, deny-bar, the static STRICT policy
    expect(second.serving).toBe(true);
    expect(second.xds.isReady).toBe(false);
    expect(second.authorize(FROM_BAR)).toMatchObject({ allowed: false, policy: 'foo/deny-bar' });
    expect(second.authorize(FROM_QUX).allowed).toBe(true);
    expect(lines.join('')).toMatch(/restored the last good state from disk/);
  });

  it('reports a corrupt snapshot by file name without quoting it, and denies until xDS arrives', async () => {
    const dir = stateDir();
    const file = join(dir, 'xds-snapshot.json');
    writeFileSync(file, '{"format": "' + SNAPSHOT_FORMAT + '", "node": "node-a", "types": {"x": {"resources": [{"name": "SECRET-CONTENT"');
    const { log, lines } = logger();
    const s = source({ address: '127.0.0.1:1', rootCertPem: (await createTestCa()).rootPem, token: 't', nodeName: 'node-a' }, dir, log);
    expect(() => s.restore()).not.toThrow();
    expect(s.serving).toBe(false);
    expect(s.authorize(FROM_QUX)).toMatchObject({ allowed: false, reason: 'no-xds-state' });
    const out = lines.join('');
    expect(out).toContain(file);
    expect(out).toContain('NM_ERR_STATE_FILE');
    expect(out).not.toContain('SECRET-CONTENT');
    // The file is left for the next sync to overwrite; nothing else was written meanwhile.
    expect(readFileSync(file, 'utf8')).toContain('SECRET-CONTENT');
  });

  it('refuses a snapshot saved by another node, and a field of the wrong type, by name', () => {
    const text = encodeSnapshot({ [TYPE_ADDRESS]: { resources: [{ name: 'a', version: '1', resource: { type_url: TYPE_ADDRESS, value: Buffer.from([1, 2]) } }], rejected: [] } }, 'node-a');
    expect(decodeSnapshot(text, 'node-a')[TYPE_ADDRESS]!.resources[0]!.resource.value).toEqual(Buffer.from([1, 2]));
    expect(() => decodeSnapshot(text, 'node-b')).toThrow(/saved by node "node-a"/);
    expect(() => decodeSnapshot(text.replace('"version":"1"', '"version":1'), 'node-a')).toThrow(/resources\[0\] needs name, version and typeUrl/);
  });

  it('resumes from the restored versions: what the server dropped is removed, and the state never goes empty', async () => {
    env = await startTestControlPlane({ 'ns.yaml': NS_FOO, 'web.yaml': pod('web', { ip: '10.1.0.5', node: 'node-a' }), 'db.yaml': pod('db', { ip: '10.1.0.6', node: 'node-a' }) });
    const dir = stateDir();
    const first = source(env.conn('node-a'), dir);
    first.restore();
    first.start(() => undefined);
    await first.xds.ready;
    await waitFor(() => first.state.workloadByIp('10.1.0.6') !== undefined, 'both workloads');
    await first.stop();
    const saved = new Map(first.xds.versions(TYPE_ADDRESS));

    // While the agent is away, db goes.
    env.remove('db.yaml');
    await new Promise((r) => setTimeout(r, 300));
    const requests: PbDeltaRequest[] = [];
    env.cp.xds.on('request', (r: RequestEvent) => requests.push(r.request));
    const second = source(env.conn('node-a'), dir);
    second.restore();
    expect(second.state.workloadByIp('10.1.0.6')).toBeDefined(); // restored, stale
    const sizes: number[] = [];
    second.state.on('change', () => sizes.push([...second.state.workloads()].length));
    second.start(() => undefined);
    await second.xds.ready;
    await waitFor(() => second.state.workloadByIp('10.1.0.6') === undefined, 'the removal of db');
    expect(second.state.workloadByIp('10.1.0.5')).toBeDefined();
    expect(sizes.every((n) => n > 0)).toBe(true);
    const firstAddr = requests.find((r) => r.typeUrl === TYPE_ADDRESS && !r.responseNonce)!;
    expect(firstAddr.initialResourceVersions).toEqual(Object.fromEntries(saved));
  });
});

/** A hand-driven xDS server (the real XdsServer, no control plane) with the control plane's TLS. */
async function handServer(e: TestControlPlane): Promise<{ xds: XdsServer; address: string }> {
  const xds = new XdsServer({ typeUrls: [TYPE_ADDRESS, TYPE_AUTHORIZATION] });
  const server = new grpc.Server();
  server.addService(adsService, { DeltaAggregatedResources: xds.handler });
  const creds = grpc.ServerCredentials.createSsl(null, [{ cert_chain: readFileSync(e.cp.paths.servingCert), private_key: readFileSync(e.cp.paths.servingKey) }], false);
  const port = await new Promise<number>((res, rej) => server.bindAsync('127.0.0.1:0', creds, (err, p) => (err ? rej(err) : res(p))));
  closers.push(() => void server.forceShutdown());
  return { xds, address: `127.0.0.1:${port}` };
}

const WEB: PbWorkload = {
  uid: 'Kubernetes//Pod/foo/web',
  name: 'web',
  namespace: 'foo',
  addresses: [Buffer.from([10, 1, 0, 5])],
  network: '',
  tunnelProtocol: 'HBONE',
  trustDomain: 'cluster.local',
  serviceAccount: 'web',
  node: 'node-a',
  canonicalName: 'web',
  canonicalRevision: 'latest',
  workloadType: 'POD',
  workloadName: 'web',
  authorizationPolicies: ['foo/p'],
  status: 'HEALTHY',
  clusterId: 'Kubernetes',
  services: {},
};

describe('rejected resources across a restart', () => {
  it('keep denying after a restart, and lift once the server no longer has them', async () => {
    env = await startTestControlPlane({ 'ns.yaml': NS_FOO });
    const { xds, address } = await handServer(env);
    const conn = { ...env.conn('node-a'), address };
    // foo/p's action does not exist: the agent NACKs it, and web names it.
    const bad = codecs.authorization.encode({ name: 'p', namespace: 'foo', scope: 'WORKLOAD_SELECTOR', action: 7 as never, rules: [], dryRun: false });
    xds.setResources(TYPE_ADDRESS, [{ name: WEB.uid, value: codecs.address.encode({ workload: WEB }) }]);
    xds.setResources(TYPE_AUTHORIZATION, [{ name: 'foo/p', value: bad }]);
    const dir = stateDir();
    const first = source(conn, dir);
    first.restore();
    first.start(() => undefined);
    await first.xds.ready;
    expect(first.state.rejected().map((r) => r.name)).toEqual(['foo/p']);
    expect(first.authorize(FROM_QUX)).toMatchObject({ allowed: false, policy: 'foo/p' });
    await first.stop();

    // Fixed on the server while the agent is away: foo/p is gone and web no longer names it.
    xds.setResources(TYPE_AUTHORIZATION, []);
    xds.setResources(TYPE_ADDRESS, [{ name: WEB.uid, value: codecs.address.encode({ workload: { ...WEB, authorizationPolicies: [] } }) }]);
    const second = source(conn, dir);
    second.restore();
    expect(second.state.rejected().map((r) => r.name)).toEqual(['foo/p']);
    expect(second.authorize(FROM_QUX).allowed).toBe(false);
    second.start(() => undefined);
    await second.xds.ready;
    await waitFor(() => second.state.rejected().length === 0, 'the rejection lifted by the removal');
    expect(second.authorize(FROM_QUX).allowed).toBe(true);
  });
});
