// SPIFFE IDs and the SecretManager (keys, CSRs, rotation) against the real CA.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { CertificateAuthority } from '../../src/controlplane/index.js';
import { formatSpiffeId, parseSpiffeId, principalOf, SecretManager, tryParseSpiffeId } from '../../src/identity/index.js';
import type { CertificateSigner } from '../../src/identity/ca-client.js';
import { summarizeCert } from '../../src/identity/x509.js';

describe('SPIFFE IDs', () => {
  it('parses and formats spiffe://<td>/ns/<ns>/sa/<sa>', () => {
    const id = parseSpiffeId('spiffe://cluster.local/ns/foo/sa/bar');
    expect(id).toEqual({ trustDomain: 'cluster.local', namespace: 'foo', serviceAccount: 'bar' });
    expect(formatSpiffeId(id)).toBe('spiffe://cluster.local/ns/foo/sa/bar');
    expect(principalOf(id)).toBe('cluster.local/ns/foo/sa/bar');
  });

  it('rejects malformed IDs with a reason', () => {
    expect(() => parseSpiffeId('cluster.local/ns/foo/sa/bar')).toThrow(/must start with spiffe:\/\//);
    expect(() => parseSpiffeId('spiffe://cluster.local/foo/bar')).toThrow(/must have the form/);
    expect(() => parseSpiffeId('spiffe://Cluster.Local/ns/a/sa/b')).toThrow(/trust domain/);
    expect(() => parseSpiffeId('spiffe://td/ns//sa/b')).toThrow(/non-empty/);
    expect(tryParseSpiffeId('spiffe://td/ns/a/sa/b/extra')).toBeUndefined();
  });
});

// The CA runs for real, in-process: the signer calls it directly instead of over gRPC (the
// gRPC path is covered by ca.test.ts), so that fake timers can drive rotation.
let dir: string;
let ca: CertificateAuthority;
beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'nodemesh-id-'));
  ca = await CertificateAuthority.open({ stateDir: dir, trustDomain: 'cluster.local', maxTtlSeconds: 30 * 86_400 });
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function countingSigner(): CertificateSigner & { calls: number; failNext: number } {
  const s = {
    calls: 0,
    failNext: 0,
    async createCertificate(csr: string, ttl: number) {
      s.calls++;
      if (s.failNext > 0) {
        s.failNext--;
        throw new Error('CA unavailable'); // a simulated outage, to exercise the retry path
      }
      return ca.sign(csr, ttl, () => undefined);
    },
  };
  return s;
}

const ID = 'spiffe://cluster.local/ns/foo/sa/web';

/** Waits for key generation and signing, which run on Node's thread pool, not on timers. */
async function until(pred: () => boolean): Promise<void> {
  for (let i = 0; i < 10_000 && !pred(); i++) await new Promise((r) => setImmediate(r));
  expect(pred()).toBe(true);
}

const managers: SecretManager[] = [];
afterEach(() => {
  for (const m of managers.splice(0)) m.close();
  vi.useRealTimers();
});

describe('SecretManager', () => {
  it('shares one request between concurrent callers and never lists keys', async () => {
    const signer = countingSigner();
    const sm = new SecretManager({ ca: signer });
    managers.push(sm);
    const [a, b] = await Promise.all([sm.get(ID), sm.get(ID)]);
    expect(a).toBe(b);
    expect(signer.calls).toBe(1);
    expect(a.keyPem).toMatch(/BEGIN PRIVATE KEY/);
    expect(a.rootsPem).toBe(ca.rootCertPem);
    expect(a.certChainPem).not.toContain(ca.rootCertPem.trim());
    expect(summarizeCert(a.certChainPem).subjectAltNames).toEqual([`URI:${ID}`]);
    const [info] = sm.list();
    expect(info).toMatchObject({ identity: ID, state: 'ready', subjectAltNames: [`URI:${ID}`] });
    expect(JSON.stringify(sm.list())).not.toMatch(/PRIVATE|BEGIN/);
  });

  it('rotates at half the lifetime (fake timers) and stops after forget', async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'Date'] });
    const signer = countingSigner();
    const sm = new SecretManager({ ca: signer, validitySeconds: 24 * 3600 });
    managers.push(sm);
    const first = await sm.get(ID);
    expect(first.notAfter.getTime() - Date.now()).toBeCloseTo(24 * 3600_000, -4);
    const rotated = new Promise((r) => sm.once('rotated', r));
    await vi.advanceTimersByTimeAsync(11.9 * 3600_000);
    expect(signer.calls).toBe(1);
    await vi.advanceTimersByTimeAsync(0.2 * 3600_000);
    await rotated;
    expect(signer.calls).toBe(2);
    const second = await sm.get(ID);
    expect(second.notAfter.getTime()).toBeGreaterThan(first.notAfter.getTime());
    sm.forget(ID);
    await vi.advanceTimersByTimeAsync(48 * 3600_000);
    expect(signer.calls).toBe(2);
  });

  it('retries a failed request with backoff and keeps serving the current certificate', async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'Date'] });
    const signer = countingSigner();
    const sm = new SecretManager({ ca: signer, validitySeconds: 3600, retry: { initialMs: 1000, maxMs: 4000 } });
    managers.push(sm);
    signer.failNext = 1;
    await expect(sm.get(ID)).rejects.toThrow(/CA unavailable/);
    expect(sm.list()[0]).toMatchObject({ state: 'failed', lastError: 'CA unavailable' });
    await vi.advanceTimersByTimeAsync(1000);
    await until(() => signer.calls === 2);
    const good = await sm.get(ID);
    expect(signer.calls).toBe(2);
    // A failing rotation leaves the valid certificate in place, and is retried.
    signer.failNext = 2;
    await vi.advanceTimersByTimeAsync(1800_000 + 10);
    await until(() => signer.calls === 3 && sm.list()[0]!.lastError !== undefined);
    expect(await sm.get(ID)).toBe(good);
    await vi.advanceTimersByTimeAsync(5000);
    await until(() => signer.calls >= 4);
  });
});
