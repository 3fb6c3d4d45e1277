// Every map and cache of the agent has an owner that prunes it: a workload identity's key and
// certificate (memory and file) go when the last pod with it leaves the node and stay while
// another pod has it; the enroller's per-pod locks go once a pod's work is done; a service's
// round-robin cursor goes with the service; the original-destination counters are exported
// per pod, and a pod that left takes its series along.
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { identityOf, origDstMetrics, pruneIdentities } from '../../src/agent/bounded.js';
import { ControlPlaneSource } from '../../src/agent/cp-source.js';
import { Enroller, type EnrolledPod, type RedirectBackend } from '../../src/agent/enrollment.js';
import { CertificateAuthority } from '../../src/controlplane/index.js';
import { SecretManager, SecretStore } from '../../src/identity/index.js';
import { secretFileName } from '../../src/identity/secret-store.js';
import type { NodeProxy } from '../../src/proxy/index.js';
import type { OrigDstStats } from '../../src/redirect/index.js';
import { MeshMetrics } from '../../src/telemetry/index.js';

const log = pino({ level: 'silent' });
const dirs: string[] = [];
const cleanup: Array<() => unknown> = [];
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f();
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});
function tmp(prefix: string): string {
  const d = mkdtempSync(join(tmpdir(), prefix));
  dirs.push(d);
  return d;
}

let caDir: string;
let ca: CertificateAuthority;
beforeAll(async () => {
  caDir = mkdtempSync(join(tmpdir(), 'nm-prune-ca-'));
  ca = await CertificateAuthority.open({ stateDir: caDir, trustDomain: 'cluster.local', maxTtlSeconds: 86_400 });
});
afterAll(() => rmSync(caDir, { recursive: true, force: true }));

/** An Enroller over a fake kernel side and proxy (what enrollment does there is tested elsewhere). */
function enroller(onUnenrolled?: () => void, hold?: Promise<void>) {
  const root = tmp('nm-prune-');
  const netns = join(root, 'netns');
  const cgroup = join(root, 'cgroup');
  mkdirSync(netns);
  mkdirSync(cgroup);
  const pinned = new Set<string>();
  const redirect: RedirectBackend = {
    attachPod: async (s) => void pinned.add(s.uid),
    detachPod: async (uid) => void pinned.delete(uid),
    listPinnedPods: () => [...pinned],
    podAttachment: (uid) => (pinned.has(uid) ? { links: ['connect4'] } : null),
    registerInboundListener: () => {},
  };
  const proxy = { addPod: async () => hold, removePod: async () => {} } as unknown as NodeProxy;
  const e = new Enroller({ redirect, proxy, podsDir: join(root, 'pods'), cgroupRoot: root, log, ...(onUnenrolled ? { onUnenrolled } : {}) });
  cleanup.push(() => e.stop());
  let n = 10;
  const pod = (uid: string, sa: string): EnrolledPod => ({
    uid, namespace: 'shop', name: `pod-${uid}`, ip: `10.244.0.${n++}`, netnsPath: netns, cgroupPath: cgroup, containerId: `c-${uid}`,
    serviceAccount: sa, labels: {}, trustDomain: 'cluster.local', enrolledAt: '2026-01-01T00:00:00.000Z',
    exclusions: { excludeInboundPorts: [], excludeOutboundPorts: [], excludeOutboundCidrs: [] },
  });
  return { e, pod };
}

describe('workload identities are forgotten with their last pod', () => {
  it('forgets the certificate and removes its file after the last pod with the identity leaves, and keeps it while another pod has it', async () => {
    const store = new SecretStore(join(tmp('nm-prune-secrets-'), 'secrets'));
    const sm = new SecretManager({ ca: { createCertificate: (csr, ttl) => ca.sign(csr, ttl, () => undefined) }, rootsPem: ca.rootCertPem, store, logger: log });
    cleanup.push(() => sm.close());
    const forgotten: string[][] = [];
    const { e, pod } = enroller(() => forgotten.push(pruneIdentities(sm, e, log)));
    const web1 = pod('w1', 'web');
    const web2 = pod('w2', 'web');
    const db = pod('d1', 'db');
    for (const p of [web1, web2, db]) await e.enroll(p);
    const WEB = identityOf(web1);
    const DB = identityOf(db);
    await Promise.all([sm.get(WEB), sm.get(DB)]);
    const file = (id: string) => join(store.dir, secretFileName(id));
    expect(existsSync(file(WEB)) && existsSync(file(DB))).toBe(true);

    await e.unenroll(web1.uid); // web2 still has the identity
    expect(forgotten.at(-1)).toEqual([]);
    expect(sm.list().map((s) => s.identity).sort()).toEqual([DB, WEB]);
    expect(existsSync(file(WEB))).toBe(true);

    await e.unenroll(db.uid); // the last pod with db
    expect(forgotten.at(-1)).toEqual([DB]);
    expect(sm.list().map((s) => s.identity)).toEqual([WEB]);
    expect(existsSync(file(DB))).toBe(false);
    expect(existsSync(file(WEB))).toBe(true);

    await e.unenroll(web2.uid);
    expect(forgotten.at(-1)).toEqual([WEB]);
    expect(sm.list()).toEqual([]);
    expect(existsSync(file(WEB))).toBe(false);
  });

  it('keeps an identity that only a pod record on disk names (a pod another agent of the node serves)', async () => {
    const sm = new SecretManager({ ca: { createCertificate: (csr, ttl) => ca.sign(csr, ttl, () => undefined) }, rootsPem: ca.rootCertPem, logger: log });
    cleanup.push(() => sm.close());
    const { e, pod } = enroller();
    const other = pod('o1', 'other');
    await e.enroll(other);
    await sm.get(identityOf(other));
    // This agent forgets the pod (the other agent took it over), its record stays on disk.
    expect(e.recorded().map((p) => p.uid)).toEqual(['o1']);
    expect(pruneIdentities(sm, { pods: () => [], pendingPods: () => [], recorded: () => e.recorded() }, log)).toEqual([]);
    // The twin: without the record nothing names it, and it goes.
    expect(pruneIdentities(sm, { pods: () => [], pendingPods: () => [], recorded: () => [] }, log)).toEqual([identityOf(other)]);
    expect(sm.list()).toEqual([]);
  });
});

describe('the enroller keeps no per-pod lock once a pod\'s work is done', () => {
  it('holds a lock only while a pod enrolls', async () => {
    let release!: () => void;
    const hold = new Promise<void>((r) => (release = r));
    const { e, pod } = enroller(undefined, hold);
    const busy = e.enroll(pod('a1', 'web'));
    await new Promise((r) => setImmediate(r));
    expect(e.inFlight()).toBe(1); // the twin: the lock is there while the work runs
    release();
    await busy;
    await new Promise((r) => setImmediate(r));
    expect(e.inFlight()).toBe(0);
    for (let i = 0; i < 20; i++) {
      await e.enroll(pod(`p${i}`, 'web'));
      await e.unenroll(`p${i}`);
    }
    await new Promise((r) => setImmediate(r));
    expect(e.inFlight()).toBe(0);
  });
});

describe('a service that leaves the state takes its round-robin cursor along', () => {
  it('forgets the cursor of a removed service and keeps the others', async () => {
    const cp = new ControlPlaneSource({ address: '127.0.0.1:1', rootCertPem: ca.rootCertPem, token: 't', nodeName: 'n' }, log);
    cleanup.push(() => cp.stop());
    const svc = (name: string) => ({
      kind: 'service' as const,
      service: { name, namespace: 'shop', hostname: `${name}.shop.svc.cluster.local`, key: `shop/${name}.shop.svc.cluster.local`, vips: [], ports: [], subjectAltNames: [] },
    });
    cp.state.update((u) => {
      u.insertAddress('shop/a.shop.svc.cluster.local', svc('a'));
      u.insertAddress('shop/b.shop.svc.cluster.local', svc('b'));
    });
    cp.balancer.pick('shop/a.shop.svc.cluster.local', ['x']);
    cp.balancer.pick('shop/b.shop.svc.cluster.local', ['x']);
    expect(cp.balancer.services).toBe(2);
    cp.state.update((u) => u.removeAddress('shop/a.shop.svc.cluster.local'));
    expect(cp.balancer.services).toBe(1);
  });
});

describe('the original-destination counters as metrics', () => {
  const stats = (pods: OrigDstStats['pods']): OrigDstStats => ({
    capacity: 65536,
    podQuota: 16384,
    entries: pods.reduce((n, p) => n + p.entries, 0),
    counters: { captured: 10, recordFailed: 1, quotaRefused: 2, established: 9, closed: 7, evictedCookie: 3, evictedOrig: 4, untracked: 0 },
    pods,
  });

  it('exports the kernel counts per pod, and drops the series of a pod that left', async () => {
    const m = new MeshMetrics({ defaultMetrics: false });
    const names: Record<string, string> = { u1: 'shop/web' };
    let now = stats([{ netnsCookie: '7', uid: 'u1', ip: '10.0.0.1', entries: 2, refused: 2 }, { netnsCookie: '9', entries: 0, refused: 0 }]);
    m.origDstFrom(() => origDstMetrics(now, (uid) => names[uid]));
    let text = (await m.render()).body;
    expect(text).toContain('nodemesh_orig_dst_capacity 65536');
    expect(text).toContain('nodemesh_orig_dst_pod_quota 16384');
    expect(text).toContain('nodemesh_orig_dst_entries 2');
    expect(text).toContain('nodemesh_orig_dst_pod_entries{pod="shop/web"} 2');
    expect(text).toContain('nodemesh_orig_dst_pod_entries{pod="netns:9"} 0');
    expect(text).toContain('nodemesh_orig_dst_quota_refusals_total{pod="shop/web"} 2');
    expect(text).toContain('nodemesh_orig_dst_evictions_total{map="nm_orig_dst"} 4');
    expect(text).toContain('nodemesh_orig_dst_evictions_total{map="nm_cookie_dst"} 3');
    expect(text).toContain('nodemesh_orig_dst_record_failures_total 1');

    now = stats([{ netnsCookie: '9', entries: 1, refused: 0 }]);
    text = (await m.render()).body;
    expect(text).not.toContain('pod="shop/web"');
    expect(text).toContain('nodemesh_orig_dst_pod_entries{pod="netns:9"} 1');
  });
});
