// The Gateway API mesh (GAMMA) conformance suite run against nodemesh: base.yaml on two simulated
// nodes, each case's routes file dropped into the watched config dir, its requests sent with curl
// from inside the suite's client pods, and every answer judged as the Go suite would judge it.
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { parseAllDocuments } from 'yaml';
import { BASE_FILE, CASES, FIXTURE_DIR, MESH_NS, writeGammaConfig, type GammaCase, type GammaExpect, type GammaRequest } from '../fixtures/gamma/cases.js';
import { clusterUp, type Cluster } from '../helpers/cluster.js';
import { ECHO_SERVER_MAIN } from '../helpers/echo-server-main.js';
import { check, checkWeights, describeAnswer, podRef, sendBatch, type Answer } from '../helpers/gamma-curl.js';
import { leftovers } from '../helpers/mesh.js';
import { describePrivileged } from '../helpers/privileged.js';

/** The suite's MaxTimeToConsistency, shortened: config reaches the agents in well under a second. */
const CONSISTENCY_MS = 10_000;
/** The suite's RequiredConsecutiveSuccesses: an answer that merely predates the routes must not pass. */
const CONSECUTIVE = 3;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** `ns/name` of every HTTPRoute in a routes file. */
function routeNames(file: string): string[] {
  return parseAllDocuments(readFileSync(join(FIXTURE_DIR, file), 'utf8'))
    .map((d) => d.toJS() as { kind?: string; metadata?: { namespace?: string; name?: string } } | null)
    .filter((d) => d?.kind === 'HTTPRoute')
    .map((d) => `${d!.metadata!.namespace}/${d!.metadata!.name}`);
}

/** What a request gets with no routes at all: 200 from an echo, its path and its own headers as sent, no route's marks. */
function baseline(r: GammaRequest): GammaExpect {
  const sent = (name: string) => Object.entries(r.headers).find(([n]) => n.toLowerCase() === name.toLowerCase())?.[1];
  const names = [...Object.keys(r.expect.requestHeaders ?? {}), ...(r.expect.absentRequestHeaders ?? [])];
  const requestHeaders = Object.fromEntries(names.flatMap((n) => (sent(n) === undefined ? [] : [[n, sent(n)!]])));
  return { status: [200], path: r.path, requestHeaders, absentRequestHeaders: names.filter((n) => sent(n) === undefined), absentResponseHeaders: ['X-Header-Set'] };
}

describePrivileged('the Gateway API mesh conformance suite (GAMMA) on two nodes', () => {
  let c: Cluster;
  let dir: string;
  let scratch: string;
  let pinRoots: string[] = [];
  let batch = 0;

  /** Sends each request once, every pod's share with one curl run there; answers in request order. */
  const send = (reqs: GammaRequest[]): Answer[] => {
    const out = new Array<Answer>(reqs.length);
    for (const from of new Set(reqs.map((r) => r.from))) {
      const idx = reqs.flatMap((r, i) => (r.from === from ? [i] : []));
      const answers = sendBatch(c, podRef(from), idx.map((i) => reqs[i]!), c.ip, scratch, `b${batch++}`);
      idx.forEach((i, k) => (out[i] = answers[k]!));
    }
    return out;
  };

  /**
   * Sends the requests until each has met `expectOf(r)` `need` times in a row or the deadline
   * passed; returns one line per request that did not, with what it got last.
   */
  const converge = async (reqs: GammaRequest[], expectOf: (r: GammaRequest) => GammaExpect, need: number): Promise<string[]> => {
    const streak = new Map<GammaRequest, number>();
    const last = new Map<GammaRequest, { misses: string[]; answer: Answer }>();
    const deadline = Date.now() + CONSISTENCY_MS;
    let pending = reqs;
    while (pending.length && Date.now() < deadline) {
      const answers = send(pending);
      pending.forEach((r, i) => {
        const misses = check(expectOf(r), answers[i]!, answers[i]!.url);
        streak.set(r, misses.length ? 0 : (streak.get(r) ?? 0) + 1);
        last.set(r, { misses, answer: answers[i]! });
      });
      pending = pending.filter((r) => streak.get(r)! < need);
      if (pending.some((r) => last.get(r)!.misses.length)) await sleep(200);
    }
    return pending.map((r) => {
      const l = last.get(r);
      if (!l) return `${r.name}: never sent`;
      const why = l.misses.length ? l.misses.join('; ') : `met its expectation only ${streak.get(r)} time(s) in a row, want ${need}`;
      return `${r.name}: ${why} — last got ${describeAnswer(l.answer)}`;
    });
  };

  /** The weight check: the suite sends the batch again up to `retries` times before failing. */
  const weights = (r: GammaRequest): string[] => {
    const w = r.expect.weights!;
    let misses: string[] = [];
    for (let attempt = 0; attempt <= w.retries; attempt++) {
      misses = checkWeights(r.expect, send(new Array<GammaRequest>(r.count!).fill(r)));
      if (!misses.length) return [];
    }
    return [`${r.name}: ${misses.join('; ')} (in each of ${w.retries + 1} batches)`];
  };

  const resources = async () => {
    const r = await c.controlPlane('/debug/resources');
    return JSON.parse(r.body) as { httpRoutes: { namespace: string; name: string }[]; routes: unknown[] };
  };

  /** Waits until the control plane holds every route of `names` (or, with none, no routes at all). */
  const waitControlPlane = async (names: string[]): Promise<string | undefined> => {
    const deadline = Date.now() + CONSISTENCY_MS;
    let got: string[] = [];
    let compiled = 0;
    while (Date.now() < deadline) {
      const res = await resources();
      got = res.httpRoutes.map((r) => `${r.namespace}/${r.name}`);
      compiled = res.routes.length;
      if (names.length ? names.every((n) => got.includes(n)) : got.length === 0 && compiled === 0) return undefined;
      await sleep(100);
    }
    return `the control plane has HTTPRoutes [${got.join(', ')}] and ${compiled} compiled ServiceRoutes, want ${names.length ? `[${names.join(', ')}]` : 'none'}`;
  };

  /**
   * After a case's routes are removed: every request it sent to a Service behaves as with no
   * routes, and one that expected a particular backend of `echo` reaches both again.
   */
  const cleared = async (k: GammaCase): Promise<string[]> => {
    const cp = await waitControlPlane([]);
    if (cp) return [`after removing ${k.file}: ${cp}`];
    const probes = k.requests.filter((r) => 'service' in r.to).map(({ count: _, ...r }) => r);
    const out = await converge(probes, baseline, 1);
    const spread = probes.filter((r) => 'service' in r.to && r.to.service === 'echo' && r.expect.backend);
    const deadline = Date.now() + CONSISTENCY_MS;
    for (const r of spread) {
      let got = new Set<string>();
      while (Date.now() < deadline) {
        got = new Set(send(new Array<GammaRequest>(12).fill(r)).flatMap((a) => (a.echo?.namespace === MESH_NS ? [a.echo.pod.split('-').slice(0, 2).join('-')] : [])));
        if (got.has('echo-v1') && got.has('echo-v2')) break;
        await sleep(200);
      }
      if (!(got.has('echo-v1') && got.has('echo-v2'))) out.push(`${r.name}: 12 requests reached only [${[...got].join(', ')}], want both echo-v1 and echo-v2`);
    }
    return out.map((m) => `after removing ${k.file}: ${m}`);
  };

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'nm-e2e-gamma-cfg-'));
    scratch = mkdtempSync(join(tmpdir(), 'nm-e2e-gamma-curl-'));
    writeGammaConfig(dir, ECHO_SERVER_MAIN);
    // A pod's `node` would be whatever node is on PATH there, which may be older than the echo needs.
    const base = join(dir, BASE_FILE);
    writeFileSync(base, readFileSync(base, 'utf8').split('command: [node, ').join(`command: [${JSON.stringify(process.execPath)}, `));
    c = await clusterUp(dir);
    pinRoots = c.pinRoots;
  });

  afterAll(async () => {
    await c?.down();
    rmSync(dir, { recursive: true, force: true });
    rmSync(scratch, { recursive: true, force: true });
    expect(leftovers(...pinRoots)).toEqual([]);
  });

  for (const k of CASES) {
    if (k.blocked) {
      it.skip(`${k.test} [blocked: ${k.blocked}]`, () => {});
      continue;
    }
    it(k.test, async () => {
      const failures: string[] = [];
      const routes = k.file ? join(dir, basename(k.file)) : undefined;
      try {
        if (routes) {
          copyFileSync(join(FIXTURE_DIR, k.file!), routes);
          const cp = await waitControlPlane(routeNames(k.file!));
          if (cp) failures.push(cp);
        }
        if (!failures.length) {
          failures.push(...(await converge(k.requests.filter((r) => !r.count), (r) => r.expect, CONSECUTIVE)));
          for (const r of k.requests.filter((x) => x.count)) failures.push(...weights(r));
        }
        if (failures.length) {
          const errors = await c.controlPlane('/debug/config-errors');
          failures.push(`control plane config errors: ${errors.body.trim()}`);
        }
      } finally {
        if (routes) {
          rmSync(routes, { force: true });
          failures.push(...(await cleared(k)));
        }
      }
      expect(failures, failures.join('\n')).toEqual([]);
    });
  }
});
