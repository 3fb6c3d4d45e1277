// The built-in CA over real gRPC + TLS: who may get which certificate, and what it gets.
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, createServer, type TLSSocket } from 'node:tls';
import { afterEach, describe, expect, it } from 'vitest';
import { CertificateAuthority } from '../../src/controlplane/index.js';
import { CaClient, createCsr, generateKeyPair, SecretManager } from '../../src/identity/index.js';
import type { Secret } from '../../src/identity/secrets.js';
import { isSignedBy, summarizeCert } from '../../src/identity/x509.js';
import { PodStatusClient } from '../../src/xds/index.js';
import { NS_FOO, pod, startTestControlPlane, waitFor, type TestControlPlane } from '../helpers/xds.js';

let env: TestControlPlane | undefined;
const closers: (() => void | Promise<void>)[] = [];

afterEach(async () => {
  for (const c of closers.splice(0)) await c();
  await env?.close();
  env = undefined;
});

const WEB = 'spiffe://cluster.local/ns/foo/sa/web';

async function csrFor(uri: string): Promise<string> {
  return createCsr(await generateKeyPair(), uri);
}

function ca(e: TestControlPlane, node: string, token?: string): CaClient {
  const c = new CaClient(e.conn(node, token));
  closers.push(() => c.close());
  return c;
}

describe('certificate authority', () => {
  it('signs a CSR for a pod on the caller node: SAN URI, leaf first, chaining to the root', async () => {
    env = await startTestControlPlane({ 'ns.yaml': NS_FOO, 'web.yaml': pod('web', { ip: '10.1.0.5', node: 'node-a' }) });
    const chain = await ca(env, 'node-a').createCertificate(await csrFor(WEB), 3600);
    expect(chain).toHaveLength(2);
    const leaf = summarizeCert(chain[0]!);
    expect(leaf.subjectAltNames).toEqual([`URI:${WEB}`]);
    expect(isSignedBy(chain[0]!, chain[1]!)).toBe(true);
    expect(chain[1]).toBe(env.cp.ca.rootCertPem);
    // The requested lifetime is honoured.
    expect(Math.abs(leaf.notAfter.getTime() - Date.now() - 3600_000)).toBeLessThan(5000);
    // The root key is never served, and its file is private.
    expect(chain.join('')).not.toMatch(/PRIVATE KEY/);
    expect(statSync(join(env.stateDir, 'root-key.pem')).mode & 0o777).toBe(0o600);
    expect(statSync(env.cp.paths.nodeSecret!).mode & 0o777).toBe(0o600);
    expect(statSync(env.cp.paths.adminToken).mode & 0o777).toBe(0o600);
  });

  it('caps the requested lifetime at the maximum', async () => {
    env = await startTestControlPlane({ 'ns.yaml': NS_FOO, 'web.yaml': pod('web', { ip: '10.1.0.5', node: 'node-a' }) }, { maxCertTtlSeconds: 600 });
    const chain = await ca(env, 'node-a').createCertificate(await csrFor(WEB), 86_400 * 30);
    expect(summarizeCert(chain[0]!).notAfter.getTime() - Date.now()).toBeLessThanOrEqual(600_000);
  });

  it('refuses an identity that has no pod on the caller node', async () => {
    env = await startTestControlPlane({ 'ns.yaml': NS_FOO, 'web.yaml': pod('web', { ip: '10.1.0.5', node: 'node-a' }) });
    await expect(ca(env, 'node-b').createCertificate(await csrFor(WEB), 3600)).rejects.toMatchObject({ code: 'NM_ERR_CA', details: { grpcCode: 7 } });
    await expect(ca(env, 'node-a').createCertificate(await csrFor('spiffe://cluster.local/ns/foo/sa/other'), 3600)).rejects.toMatchObject({ code: 'NM_ERR_CA' });
    // Another trust domain is refused even for a known pod.
    await expect(ca(env, 'node-a').createCertificate(await csrFor('spiffe://evil.example/ns/foo/sa/web'), 3600)).rejects.toMatchObject({ code: 'NM_ERR_CA' });
    // Garbage is refused as an invalid argument.
    await expect(ca(env, 'node-a').createCertificate('not a csr', 3600)).rejects.toMatchObject({ code: 'NM_ERR_CA', details: { grpcCode: 3 } });
  });

  it('signs for a pod once its node has reported it', async () => {
    env = await startTestControlPlane({ 'ns.yaml': NS_FOO, 'web.yaml': pod('web', { node: 'node-c' }) });
    const client = ca(env, 'node-c');
    await expect(client.createCertificate(await csrFor(WEB), 3600)).rejects.toMatchObject({ code: 'NM_ERR_CA' });
    const ps = new PodStatusClient(env.conn('node-c'));
    closers.push(() => ps.close());
    await ps.report([{ namespace: 'foo', name: 'web', ip: '10.4.0.2', phase: 'Running' }]);
    const chain = await client.createCertificate(await csrFor(WEB), 3600);
    expect(summarizeCert(chain[0]!).subjectAltNames).toEqual([`URI:${WEB}`]);
  });

  it('refuses an unauthenticated caller, and the admin token, which proves no node', async () => {
    env = await startTestControlPlane({ 'ns.yaml': NS_FOO, 'web.yaml': pod('web', { ip: '10.1.0.5', node: 'node-a' }) });
    await expect(ca(env, 'node-a', 'wrong-token-wrong-token').createCertificate(await csrFor(WEB), 3600)).rejects.toMatchObject({ code: 'NM_ERR_AUTH' });
    await expect(ca(env, 'node-a', env.cp.adminToken).createCertificate(await csrFor(WEB), 3600)).rejects.toMatchObject({ code: 'NM_ERR_AUTH', details: { grpcCode: 16 } });
    // The twin: node-a's own token gets the certificate.
    await expect(ca(env, 'node-a').createCertificate(await csrFor(WEB), 3600)).resolves.toHaveLength(2);
  });

  it('keeps its root across restarts and can use a configured root', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'nodemesh-ca-'));
    closers.push(() => rmSync(dir, { recursive: true, force: true }));
    const a = await CertificateAuthority.open({ stateDir: dir, trustDomain: 'example.org' });
    const b = await CertificateAuthority.open({ stateDir: dir, trustDomain: 'example.org' });
    expect(b.rootCertPem).toBe(a.rootCertPem);
    const c = await CertificateAuthority.open({ stateDir: join(dir, 'other'), trustDomain: 'example.org', rootCertFile: join(dir, 'root-cert.pem'), rootKeyFile: join(dir, 'root-key.pem') });
    expect(c.rootCertPem).toBe(a.rootCertPem);
    const chain = await c.sign(await csrFor('spiffe://example.org/ns/x/sa/y'), 60, () => undefined);
    expect(isSignedBy(chain[0]!, a.rootCertPem)).toBe(true);
    // A key that does not belong to the certificate is refused.
    const d = await CertificateAuthority.open({ stateDir: join(dir, 'd'), trustDomain: 'example.org' });
    await expect(
      CertificateAuthority.open({ stateDir: dir, trustDomain: 'example.org', rootCertFile: join(dir, 'root-cert.pem'), rootKeyFile: join(dir, 'd', 'root-key.pem') }),
    ).rejects.toMatchObject({ code: 'NM_ERR_CA' });
    expect(d.rootCertPem).not.toBe(a.rootCertPem);
  });

  it('issues certificates two workloads can use for mutual TLS', async () => {
    env = await startTestControlPlane({ 'ns.yaml': NS_FOO, 'p.yaml': pod('web', { ip: '10.1.0.5', node: 'node-a' }) + '---\n' + pod('db', { ip: '10.1.0.6', node: 'node-a' }) });
    const sm = new SecretManager({ ca: ca(env, 'node-a') });
    closers.push(() => sm.close());
    const [web, db] = await Promise.all([sm.get(WEB), sm.get('spiffe://cluster.local/ns/foo/sa/db')]);
    const server = createServer({ cert: db.certChainPem, key: db.keyPem, ca: db.rootsPem, requestCert: true, rejectUnauthorized: true, minVersion: 'TLSv1.3' }, (s) => s.end('ok'));
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    closers.push(() => new Promise<void>((r) => server.close(() => r())));
    const port = (server.address() as { port: number }).port;
    const peer = await new Promise<string>((resolve, reject) => {
      const s: TLSSocket = connect({ host: '127.0.0.1', port, cert: web.certChainPem, key: web.keyPem, ca: web.rootsPem, checkServerIdentity: () => undefined }, () => {
        resolve(s.getPeerX509Certificate()?.subjectAltName ?? '');
        s.end();
      });
      s.on('error', reject);
    });
    expect(peer).toBe('URI:spiffe://cluster.local/ns/foo/sa/db');
  });

  it('rotates a certificate before it expires', async () => {
    env = await startTestControlPlane({ 'ns.yaml': NS_FOO, 'web.yaml': pod('web', { ip: '10.1.0.5', node: 'node-a' }) });
    // A short real lifetime instead of fake timers: the CA, gRPC and TLS all run for real.
    const sm = new SecretManager({ ca: ca(env, 'node-a'), validitySeconds: 3, rotateAtFraction: 0.5 });
    closers.push(() => sm.close());
    const first = await sm.get(WEB);
    const rotated: Secret[] = [];
    sm.on('rotated', (s) => rotated.push(s));
    await waitFor(() => rotated.length > 0, 'the rotation', 5000);
    expect(Date.now()).toBeLessThan(first.notAfter.getTime());
    const second = await sm.get(WEB);
    expect(second).toBe(rotated[0]);
    expect(summarizeCert(second.certChainPem).serialNumber).not.toBe(summarizeCert(first.certChainPem).serialNumber);
    expect(second.keyPem).not.toBe(first.keyPem);
    expect(second.notAfter.getTime()).toBeGreaterThan(first.notAfter.getTime());
    // The listing shows expiry and SAN, never key material.
    const listed = sm.list();
    expect(listed).toEqual([expect.objectContaining({ identity: WEB, state: 'ready', subjectAltNames: [`URI:${WEB}`] })]);
    expect(JSON.stringify(listed)).not.toMatch(/PRIVATE KEY/);
    expect(readFileSync(env.cp.paths.rootCert, 'utf8')).toBe(second.rootsPem);
  });
});
