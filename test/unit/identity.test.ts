// SPIFFE IDs and the SecretManager (keys, CSRs, rotation, persistence) against the real CA.
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { CertificateAuthority } from '../../src/controlplane/index.js';
import { formatSpiffeId, parseSpiffeId, principalOf, SecretManager, SecretStore, tryParseSpiffeId } from '../../src/identity/index.js';
import { secretFileName } from '../../src/identity/secret-store.js';
import { pino } from 'pino';
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

describe('SecretManager with a store: certificates across restarts', () => {
  const dirs: string[] = [];
  afterEach(() => {
    for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
  });
  const store = (): SecretStore => {
    const d = mkdtempSync(join(tmpdir(), 'nodemesh-secrets-'));
    dirs.push(d);
    return new SecretStore(join(d, 'secrets'));
  };
  const logged = (): { logger: pino.Logger; text: () => string } => {
    const lines: string[] = [];
    return { logger: pino({ level: 'info' }, { write: (l: string) => void lines.push(l) }), text: () => lines.join('') };
  };
  const OTHER = 'spiffe://cluster.local/ns/foo/sa/db';

  it('keeps every issued certificate 0600 in a 0700 directory and serves it after a restart without the CA', async () => {
    const st = store();
    const signer = countingSigner();
    const { logger, text } = logged();
    const first = new SecretManager({ ca: signer, rootsPem: ca.rootCertPem, store: st, logger });
    managers.push(first);
    const issued = await first.get(ID);
    const file = join(st.dir, secretFileName(ID));
    expect(statSync(st.dir).mode & 0o777).toBe(0o700);
    expect(statSync(file).mode & 0o777).toBe(0o600);
    first.close();

    const down = countingSigner();
    down.failNext = 100; // the CA is away
    const second = new SecretManager({ ca: down, rootsPem: ca.rootCertPem, store: st, logger });
    managers.push(second);
    expect(second.restore()).toEqual([ID]);
    const served = await second.get(ID);
    expect(down.calls).toBe(0);
    expect(served.keyPem).toBe(issued.keyPem);
    expect(served.certChainPem).toBe(issued.certChainPem);
    expect(second.list()[0]).toMatchObject({ identity: ID, state: 'ready', serialNumber: summarizeCert(issued.certChainPem).serialNumber });
    // Keys never reach the log, neither when issued nor when restored.
    expect(text()).toMatch(/certificate restored from disk/);
    expect(text()).not.toMatch(/PRIVATE KEY|BEGIN/);
  });

  it('does not use a corrupt, mismatched or foreign-root file, names it, and asks the CA instead', async () => {
    const st = store();
    const signer = countingSigner();
    const sm = new SecretManager({ ca: signer, rootsPem: ca.rootCertPem, store: st });
    managers.push(sm);
    const good = await sm.get(ID);
    const other = await sm.get(OTHER);
    sm.close();
    const goodFile = join(st.dir, secretFileName(ID));
    const otherFile = join(st.dir, secretFileName(OTHER));
    const saved = JSON.parse(readFileSync(goodFile, 'utf8')) as Record<string, string>;

    // 1. Garbage that happens to hold key-like text: not valid JSON.
    writeFileSync(otherFile, '{"keyPem": "-----BEGIN PRIVATE KEY----- SECRET');
    // 2. Swap in another identity's key: the pair does not match.
    const swapped = { ...saved, keyPem: other.keyPem };
    const check = (contents: object | string, want: RegExp) => {
      writeFileSync(goodFile, typeof contents === 'string' ? contents : JSON.stringify(contents));
      const { secrets, errors } = st.load(ca.rootCertPem);
      expect(secrets).toEqual([]);
      const messages = errors.map((e) => `${e.code} ${e.message}`).join('\n');
      expect(messages).toContain(goodFile);
      expect(messages).toContain(otherFile);
      expect(messages).toMatch(want);
      expect(messages).not.toMatch(/SECRET|BEGIN/);
    };
    check(swapped, /the key does not belong to the certificate/);
    check({ ...saved, identity: OTHER }, /identity does not match the file name/);
    writeFileSync(goodFile, JSON.stringify(saved));
    // 3. A different mesh root: the chain does not lead to it.
    const foreignDir = mkdtempSync(join(tmpdir(), 'nodemesh-id2-'));
    dirs.push(foreignDir);
    const foreign = await CertificateAuthority.open({ stateDir: foreignDir, trustDomain: 'cluster.local' });
    expect(st.load(foreign.rootCertPem).errors.map((e) => e.message).join()).toMatch(/does not lead to the mesh roots/);
    // The positive twin, the untouched good file, is used; the corrupt one is not.
    const loaded = st.load(ca.rootCertPem);
    expect(loaded.secrets.map((x) => x.identity)).toEqual([ID]);
    expect(loaded.secrets[0]!.keyPem).toBe(good.keyPem);
    expect(loaded.errors).toHaveLength(1);

    // A manager restores the good one and asks the CA for the other.
    const next = countingSigner();
    const sm2 = new SecretManager({ ca: next, rootsPem: ca.rootCertPem, store: st });
    managers.push(sm2);
    expect(sm2.restore()).toEqual([ID]);
    await sm2.get(OTHER);
    expect(next.calls).toBe(1);
  });

  it('removes an expired file, rotates one that is due at once, and drops a forgotten identity from disk', async () => {
    const st = store();
    const sm = new SecretManager({ ca: countingSigner(), rootsPem: ca.rootCertPem, store: st, validitySeconds: 3600 });
    managers.push(sm);
    const s = await sm.get(ID);
    sm.close();
    const file = join(st.dir, secretFileName(ID));
    // Past notAfter: not used, and removed.
    expect(st.load(ca.rootCertPem, s.notAfter.getTime() + 1).errors[0]!.message).toMatch(/expired/);
    expect(existsSync(file)).toBe(false);

    // Issued long ago (rotation due): served at once, renewed in the background.
    const sm2 = new SecretManager({ ca: countingSigner(), rootsPem: ca.rootCertPem, store: st, validitySeconds: 3600 });
    managers.push(sm2);
    const fresh = await sm2.get(ID);
    sm2.close();
    const saved = JSON.parse(readFileSync(file, 'utf8')) as Record<string, string>;
    writeFileSync(file, JSON.stringify({ ...saved, issuedAt: new Date(fresh.notAfter.getTime() - 10 * 3600_000).toISOString() }));
    const signer = countingSigner();
    const sm3 = new SecretManager({ ca: signer, rootsPem: ca.rootCertPem, store: st, validitySeconds: 3600 });
    managers.push(sm3);
    const rotated = new Promise<void>((r) => sm3.once('rotated', () => r()));
    expect(sm3.restore()).toEqual([ID]);
    expect((await sm3.get(ID)).keyPem).toBe(fresh.keyPem);
    await rotated;
    expect(signer.calls).toBe(1);
    expect((await sm3.get(ID)).keyPem).not.toBe(fresh.keyPem);
    sm3.forget(ID);
    expect(readdirSync(st.dir)).toEqual([]);
  });
});
