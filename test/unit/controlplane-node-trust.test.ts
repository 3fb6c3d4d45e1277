// Per-node trust at the real control plane over gRPC + TLS: each node's token proves its node,
// a node reports and gets certificates only for pods the config places on it (with IPs inside
// its pod CIDRs), the reports survive a control-plane restart, and the /debug pages are not
// open to the network. Every refusal has its allowed twin in the same setup.
import { chmodSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { get } from 'node:http';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { nodeTokenCommand } from '../../src/cli/controlplane.js';
import { isLoopbackPeer } from '../../src/controlplane/admin.js';
import { mintNodeToken, verifyNodeToken } from '../../src/controlplane/node-credentials.js';
import { CaClient, createCsr, generateKeyPair } from '../../src/identity/index.js';
import { summarizeCert } from '../../src/identity/x509.js';
import { PodStatusClient, TYPE_ADDRESS, type PodStatus } from '../../src/xds/index.js';
import { NS_FOO, pod, startTestControlPlane, type TestControlPlane } from '../helpers/xds.js';

let env: TestControlPlane | undefined;
const closers: (() => void)[] = [];

afterEach(async () => {
  for (const c of closers.splice(0)) c();
  await env?.close();
  env = undefined;
});

/** pods web (sa web) placed on node-a and db (sa db) on node-b, neither pinned. */
const TWO_NODES = { 'ns.yaml': NS_FOO, 'pods.yaml': pod('web', { node: 'node-a' }) + '---\n' + pod('db', { node: 'node-b' }) };

/** A pino logger that keeps warn-and-above lines for the test to read. */
function captureLog(): { logger: pino.Logger; lines: Record<string, unknown>[] } {
  const lines: Record<string, unknown>[] = [];
  return { logger: pino({ level: 'warn' }, { write: (s: string) => void lines.push(JSON.parse(s) as Record<string, unknown>) }), lines };
}

function reporter(e: TestControlPlane, node: string, token?: string): PodStatusClient {
  const c = new PodStatusClient(e.conn(node, token));
  closers.push(() => c.close());
  return c;
}

function ca(e: TestControlPlane, node: string, token?: string): CaClient {
  const c = new CaClient(e.conn(node, token));
  closers.push(() => c.close());
  return c;
}

const csrFor = async (sa: string) => createCsr(await generateKeyPair(), `spiffe://cluster.local/ns/foo/sa/${sa}`);
const running = (name: string, ip: string): PodStatus => ({ namespace: 'foo', name, ip, phase: 'Running' });
/** `ns/name` → node of the workloads the control plane serves. */
const served = (e: TestControlPlane) => Object.fromEntries((e.cp.resources() as { workloads: { namespace: string; name: string; node: string }[] }).workloads.map((w) => [`${w.namespace}/${w.name}`, w.node]));

function httpGet(url: string, headers: Record<string, string> = {}): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    get(url, { headers }, (r) => {
      let body = '';
      r.on('data', (d: Buffer) => (body += d));
      r.on('end', () => resolve({ status: r.statusCode ?? 0, body }));
    }).on('error', reject);
  });
}

describe('node tokens', () => {
  it('prove the node they were minted for, and nothing once altered or signed with another secret', () => {
    const secret = 'a'.repeat(43);
    const token = mintNodeToken(secret, { node: 'node-a', podCidrs: ['10.244.1.0/24'] });
    expect(verifyNodeToken(secret, token)).toMatchObject({ node: 'node-a', podCidrs: [{ prefixLen: 24 }] });
    // The claims are readable, so swapping the node name in them must break the signature.
    const [prefix, , sig] = token.split('.');
    const forged = `${prefix}.${Buffer.from(JSON.stringify({ node: 'node-b', podCidrs: ['10.244.1.0/24'] })).toString('base64url')}.${sig}`;
    expect(verifyNodeToken(secret, forged)).toEqual({ refused: expect.stringMatching(/not signed/) });
    expect(verifyNodeToken('b'.repeat(43), token)).toEqual({ refused: expect.stringMatching(/not signed/) });
    expect(verifyNodeToken(secret, 'just-a-shared-bearer-token')).toEqual({ refused: expect.stringMatching(/not a node token/) });
    expect(() => mintNodeToken(secret, { node: 'Node_A', podCidrs: [] })).toThrow(/lowercase DNS name/);
    expect(() => mintNodeToken(secret, { node: 'node-a', podCidrs: ['10.244.1.0/33'] })).toThrow(/pod CIDR/);
  });
});

describe('nodemesh control-plane node-token', () => {
  it('mints a token, mode 0600, that the control plane of that node secret takes, and no other', async () => {
    env = await startTestControlPlane(TWO_NODES);
    const out = join(env.stateDir, 'node-b.token');
    expect(await nodeTokenCommand.run(['--node', 'node-b', '--pod-cidr', '10.1.0.0/16', '--state-dir', env.stateDir, '--out', out])).toBe(0);
    expect(statSync(out).mode & 0o777).toBe(0o600);
    const reply = await reporter(env, 'node-b', readFileSync(out, 'utf8').trim()).report([running('db', '10.1.0.6'), running('db2', '10.2.0.6')]);
    expect(reply).toMatchObject({ accepted: 1, refused: [expect.stringMatching(/10\.2\.0\.6 is outside node node-b's pod CIDRs \(10\.1\.0\.0\/16\)/)] });
    // Minted with another secret, the same claims prove nothing here.
    const other = join(env.stateDir, 'other-secret');
    writeFileSync(other, 'z'.repeat(44));
    const foreign = join(env.stateDir, 'foreign.token');
    expect(await nodeTokenCommand.run(['--node', 'node-b', '--pod-cidr', '10.1.0.0/16', '--node-secret', other, '--out', foreign])).toBe(0);
    await expect(reporter(env, 'node-b', readFileSync(foreign, 'utf8').trim()).report([])).rejects.toMatchObject({ details: { grpcCode: 16 } });
    // --pod-cidr is required: a token is never minted without saying which IPs the node has.
    await expect(nodeTokenCommand.run(['--node', 'node-b', '--state-dir', env.stateDir])).rejects.toMatchObject({ code: 'NM_ERR_USAGE' });
  });
});

describe('per-node trust', () => {
  it('refuses a spoofed report about a pod the config places on another node, and takes the node\'s own entries of the same report', async () => {
    const { logger, lines } = captureLog();
    env = await startTestControlPlane(TWO_NODES, { logger });
    const reply = await reporter(env, 'node-a').report([running('web', '10.1.0.5'), running('db', '10.1.0.6')]);
    expect(reply.accepted).toBe(1);
    expect(reply.refused).toEqual([expect.stringMatching(/^foo\/db: the config places this pod on node node-b, not on node-a$/)]);
    // web is published on node-a; db is not published from node-a's word.
    expect(served(env)).toEqual({ 'foo/web': 'node-a' });
    expect(lines).toContainEqual(expect.objectContaining({ msg: 'refused a pod status entry', node: 'node-a', pod: 'foo/db', reason: expect.stringMatching(/node-b/) }));
    // The twin: node-b reporting its own pod is taken.
    expect((await reporter(env, 'node-b').report([running('db', '10.1.0.6')])).refused).toEqual([]);
    expect(served(env)).toEqual({ 'foo/web': 'node-a', 'foo/db': 'node-b' });
  });

  it('refuses a reported IP outside the caller node\'s pod CIDR, and takes one inside it', async () => {
    const { logger, lines } = captureLog();
    env = await startTestControlPlane({ 'ns.yaml': NS_FOO, 'pods.yaml': pod('web', { node: 'node-a' }) + '---\n' + pod('api', { node: 'node-a' }) }, { logger });
    const token = env.cp.nodeToken('node-a', ['10.244.1.0/24']);
    const reply = await reporter(env, 'node-a', token).report([running('web', '10.244.1.5'), running('api', '10.244.2.5')]);
    expect(reply.accepted).toBe(1);
    expect(reply.refused).toEqual(["foo/api: ip 10.244.2.5 is outside node node-a's pod CIDRs (10.244.1.0/24)"]);
    expect(served(env)).toEqual({ 'foo/web': 'node-a' });
    expect(lines).toContainEqual(expect.objectContaining({ msg: 'refused a pod status entry', node: 'node-a', pod: 'foo/api', ip: '10.244.2.5' }));
  });

  it('takes the node from the token: a header or report naming another node is refused and logged with both', async () => {
    const { logger, lines } = captureLog();
    env = await startTestControlPlane(TWO_NODES, { logger });
    // node-a's token, claiming to be node-b (the agent's --node): refused before anything is read.
    const spoof = reporter(env, 'node-b', env.cp.nodeToken('node-a', ['10.0.0.0/8']));
    await expect(spoof.report([running('db', '10.1.0.6')])).rejects.toMatchObject({ code: 'NM_ERR_AUTH', details: { grpcCode: 7 } });
    await expect(ca(env, 'node-b', env.cp.nodeToken('node-a', ['10.0.0.0/8'])).createCertificate(await csrFor('web'), 3600)).rejects.toMatchObject({ details: { grpcCode: 7 } });
    expect(env.cp.pods.pods()).toEqual([]);
    expect(lines).toContainEqual(expect.objectContaining({ msg: 'refused a pod status report', node: 'node-a', claimedNode: 'node-b' }));
    expect(lines).toContainEqual(expect.objectContaining({ msg: 'refused a certificate request', node: 'node-a', claimedNode: 'node-b' }));
    // A token no control plane signed, and the admin token, prove nothing.
    await expect(reporter(env, 'node-b', mintNodeToken('x'.repeat(43), { node: 'node-b', podCidrs: ['10.0.0.0/8'] })).report([])).rejects.toMatchObject({ details: { grpcCode: 16 } });
    await expect(reporter(env, 'node-b', env.cp.adminToken).report([])).rejects.toMatchObject({ details: { grpcCode: 16 } });
    // The twin: node-b's own token is taken.
    await expect(reporter(env, 'node-b').report([running('db', '10.1.0.6')])).resolves.toMatchObject({ accepted: 1, refused: [] });
  });

  it('signs an identity only for a pod the config places on the caller node, whatever the caller reported', async () => {
    env = await startTestControlPlane(TWO_NODES);
    // node-a reports both pods; only web is taken.
    await reporter(env, 'node-a').report([running('web', '10.1.0.5'), running('db', '10.1.0.6')]);
    const chain = await ca(env, 'node-a').createCertificate(await csrFor('web'), 3600);
    expect(summarizeCert(chain[0]!).subjectAltNames).toEqual(['URI:spiffe://cluster.local/ns/foo/sa/web']);
    await expect(ca(env, 'node-a').createCertificate(await csrFor('db'), 3600)).rejects.toMatchObject({ code: 'NM_ERR_CA', details: { grpcCode: 7 } });
    // The twin: node-b gets db's once it reports db.
    await reporter(env, 'node-b').report([running('db', '10.1.0.6')]);
    await expect(ca(env, 'node-b').createCertificate(await csrFor('db'), 3600)).resolves.toHaveLength(2);
  });

  it('places pods without spec.nodeName on the default node only', async () => {
    env = await startTestControlPlane({ 'ns.yaml': NS_FOO, 'pods.yaml': pod('web') }, { defaultNode: 'node-0' });
    expect((await reporter(env, 'node-1').report([running('web', '10.1.0.5')])).refused).toHaveLength(1);
    await expect(ca(env, 'node-1').createCertificate(await csrFor('web'), 3600)).rejects.toMatchObject({ code: 'NM_ERR_CA' });
    expect((await reporter(env, 'node-0').report([running('web', '10.1.0.5')])).refused).toEqual([]);
    await expect(ca(env, 'node-0').createCertificate(await csrFor('web'), 3600)).resolves.toHaveLength(2);
    expect(served(env)).toEqual({ 'foo/web': 'node-0' });
  });

  it('never lets an earlier report count once the config places the pod on another node', async () => {
    env = await startTestControlPlane({ 'ns.yaml': NS_FOO });
    // The pod is unknown yet: node-a's entry is stored (as unknown) and publishes nothing.
    expect(await reporter(env, 'node-a').report([running('late', '10.1.0.7')])).toMatchObject({ accepted: 0, unknown: ['foo/late'], refused: [] });
    env.write('late.yaml', pod('late', { node: 'node-b' }));
    await new Promise<void>((resolve) => env!.cp.config.once('change', () => resolve()));
    expect(served(env)).toEqual({});
    await expect(ca(env, 'node-a').createCertificate(await csrFor('late'), 3600)).rejects.toMatchObject({ code: 'NM_ERR_CA' });
    // The twin: node-b's report of it publishes it.
    await reporter(env, 'node-b').report([running('late', '10.1.0.8')]);
    expect(served(env)).toEqual({ 'foo/late': 'node-b' });
  });
});

describe('pod status across a control-plane restart', () => {
  it('serves what nodes reported right after a restart, before any node reports again', async () => {
    env = await startTestControlPlane(TWO_NODES);
    await reporter(env, 'node-a').report([running('web', '10.1.0.5')]);
    await reporter(env, 'node-b').report([running('db', '10.1.0.6')]);
    const before = env.cp.xds.versions(TYPE_ADDRESS);
    expect(served(env)).toEqual({ 'foo/web': 'node-a', 'foo/db': 'node-b' });
    expect(statSync(env.cp.paths.podStatus).mode & 0o777).toBe(0o600);
    closers.splice(0).forEach((c) => c());
    await env.restart();
    // Nothing withdrawn: the same workloads with the same versions, from the stored reports.
    expect(served(env)).toEqual({ 'foo/web': 'node-a', 'foo/db': 'node-b' });
    expect(env.cp.xds.versions(TYPE_ADDRESS)).toEqual(before);
    // A node's next report replaces its stored entries (the stale one ages out).
    await reporter(env, 'node-a').report([]);
    expect(served(env)).toEqual({ 'foo/db': 'node-b' });
    // The same node tokens still work: the node secret survives the restart too.
    await expect(ca(env, 'node-b').createCertificate(await csrFor('db'), 3600)).resolves.toHaveLength(2);
  });

  it('starts without the stored reports when the file is corrupt, and writes a good one at the next report', async () => {
    env = await startTestControlPlane(TWO_NODES);
    await reporter(env, 'node-a').report([running('web', '10.1.0.5')]);
    const file = env.cp.paths.podStatus;
    closers.splice(0).forEach((c) => c());
    writeFileSync(file, '{"version": 1, "nodes": [');
    chmodSync(file, 0o600);
    await env.restart();
    expect(served(env)).toEqual({});
    await reporter(env, 'node-b').report([running('db', '10.1.0.6')]);
    expect(served(env)).toEqual({ 'foo/db': 'node-b' });
    expect(JSON.parse(readFileSync(file, 'utf8'))).toMatchObject({ version: 1, nodes: [{ node: 'node-b', pods: [{ name: 'db', ip: '10.1.0.6' }] }] });
  });
});

describe('admin endpoint', () => {
  it('answers /debug to a loopback peer without a token, and readiness to anyone', async () => {
    env = await startTestControlPlane(TWO_NODES);
    const admin = `http://${env.cp.adminAddress}`;
    expect((await httpGet(`${admin}/healthz/ready`)).status).toBe(200);
    expect((await httpGet(`${admin}/debug/resources`)).status).toBe(200);
    // Which peers count as loopback; a non-loopback peer needs the token (the privileged
    // node-trust suite checks that path from another network namespace).
    expect(['127.0.0.1', '127.3.0.1', '::1', '::ffff:127.0.0.1'].map(isLoopbackPeer)).toEqual([true, true, true, true]);
    expect(['10.240.0.1', '::ffff:10.0.0.1', 'fe80::1', '', undefined].map(isLoopbackPeer)).toEqual([false, false, false, false, false]);
  });
});
