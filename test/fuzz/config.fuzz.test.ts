// Fuzz: config YAML through the loaders and validators, as a running control plane reads it.
// One file (a-good.yaml) stays valid; the other (b-fuzz.yaml) starts valid and is rewritten with
// mutations of its values, types and structure (parsed, edited, re-serialised) and of its text
// (lines, indentation, anchors and aliases, flow markers, truncation). Each version goes through
// a real ControlPlane's ConfigSource and recompute (the xDS it would serve) and through the k8s
// loader the simulator and the agent use (loadConfigDir). Nothing may throw; every problem has
// the file and a line inside it; a-good.yaml's objects stay the very same and stay served; and
// b-fuzz.yaml's last good resources stay while it has errors.
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import fc from 'fast-check';
import { pino } from 'pino';
import { parseAllDocuments, stringify } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ControlPlane } from '../../src/controlplane/index.js';
import { loadConfigDir } from '../../src/k8s/index.js';
import { TYPE_ADDRESS, TYPE_AUTHORIZATION } from '../../src/xds/index.js';
import { fuzzBudget, fuzzParams, progress, watchProcess, type ProcessWatch } from '../helpers/fuzz.js';
import { mutatedText, mutatedValue } from '../helpers/mutate.js';

const A_GOOD = `apiVersion: v1
kind: Namespace
metadata: {name: foo, labels: {nodemesh.io/dataplane-mode: ambient}}
---
apiVersion: v1
kind: Pod
metadata:
  name: web
  namespace: foo
  labels: {app: web}
spec:
  nodeName: node-a
  serviceAccountName: web
  containers:
    - name: main
      command: [sleep, infinity]
      ports: [{name: http, containerPort: 8080}]
status: {podIP: 10.1.0.5}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: foo}
spec:
  clusterIP: 10.96.0.10
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: http}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-bar, namespace: foo}
spec:
  action: DENY
  rules:
    - from:
        - source:
            namespaces: ["bar"]
`;

/** Realistic YAML: an anchor and its alias, flow and block style, every kind the control plane reads. */
const B_GOOD = `# The file the fuzzer rewrites.
apiVersion: v1
kind: Namespace
metadata:
  name: bar
  labels:
    nodemesh.io/dataplane-mode: ambient
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: db, namespace: bar}
---
apiVersion: v1
kind: Pod
metadata:
  name: db
  namespace: bar
  labels:
    app: db
    version: v1
  annotations:
    traffic.sidecar.istio.io/excludeInboundPorts: "9090"
spec:
  nodeName: node-a
  serviceAccountName: db
  containers:
    - name: main
      command: [sleep, infinity]
      env:
        - {name: MODE, value: primary}
      ports:
        - {name: sql, containerPort: 5432}
status:
  podIP: 10.1.0.6
---
apiVersion: v1
kind: Service
metadata:
  name: db
  namespace: bar
  labels: &db-labels {app: db}
spec:
  clusterIP: 10.96.0.20
  selector: *db-labels
  ports:
    - {name: tcp-sql, port: 5432, targetPort: sql}
    - {name: http-admin, port: 8080, targetPort: 8080, appProtocol: http}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-web, namespace: bar}
spec:
  selector:
    matchLabels: {app: db}
  action: ALLOW
  rules:
    - from:
        - source:
            principals: ["cluster.local/ns/foo/sa/web"]
            ipBlocks: ["10.1.0.0/16"]
      to:
        - operation:
            ports: ["5432"]
      when:
        - key: source.namespace
          values: [foo]
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: bar}
spec:
  mtls: {mode: STRICT}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: db-admin, namespace: bar}
spec:
  parentRefs: [{kind: Service, group: "", name: db, port: 8080}]
  rules:
    - matches: [{path: {type: PathPrefix, value: /admin}}]
      backendRefs: [{name: db, port: 8080, weight: 1}]
`;

const B_DOCS: unknown[] = parseAllDocuments(B_GOOD).map((d) => (d as { toJS(): unknown }).toJS());
/** The same resources re-serialised without the anchor (a second text seed). */
const B_PLAIN = B_DOCS.map((d) => stringify(d)).join('---\n');

/** A new text for b-fuzz.yaml: structural edits, text edits, or both. */
const textArb: fc.Arbitrary<string> = fc.oneof(
  { weight: 4, arbitrary: mutatedValue([B_DOCS]).map(render) },
  { weight: 4, arbitrary: mutatedText([B_GOOD, B_PLAIN], 4) },
  { weight: 2, arbitrary: mutatedValue([B_DOCS], 2).chain((v) => mutatedText([render(v)], 2)) },
);

/**
 * Inputs that found bugs, tried first on every run (each makes the loader throw instead of
 * reporting a problem, and a running control plane exit on its next rescan):
 * - an alias whose anchor was deleted, or set in another document: ReferenceError from yaml's
 *   toJS() in parseConfigText (src/k8s/load.ts);
 * - an alias bomb: ReferenceError "Excessive alias count" from the same call;
 * - an alias that refers to its own ancestor: a circular value, whose field error message
 *   (JSON.stringify in src/k8s/fields.ts) throws TypeError.
 */
const FOUND: [string, boolean][] = [
  [B_GOOD.replace('  labels: &db-labels {app: db}\n', ''), false],
  [`${B_GOOD}---\napiVersion: v1\nkind: ServiceAccount\nmetadata: {name: x, namespace: bar, labels: *db-labels}\n`, false],
  [`${B_GOOD}---\na: &a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\napiVersion: v1\nkind: ServiceAccount\nmetadata: {name: z, namespace: bar}\n`, false],
  [`${B_GOOD}---\napiVersion: v1\nkind: ServiceAccount\nmetadata: &m {name: y, namespace: bar, labels: {a: *m}}\n`, false],
];

function render(v: unknown): string {
  try {
    return Array.isArray(v) ? v.map((d) => stringify(d)).join('---\n') : stringify(v);
  } catch {
    return String(v); // yaml refused the value (e.g. a lone surrogate): its string form is input enough
  }
}

const identity = (o: { kind: string; metadata: { namespace: string; name: string } }) => `${o.kind}/${o.metadata.namespace}/${o.metadata.name}`;

let root: string;
let configDir: string;
let cp: ControlPlane;
let watch: ProcessWatch;
const fileA = () => relative(process.cwd(), join(configDir, 'a-good.yaml'));
const fileB = () => relative(process.cwd(), join(configDir, 'b-fuzz.yaml'));

/** yaml warns through process.emitWarning about map keys it stringifies; mutated files have many. */
const emitWarning = process.emitWarning;

beforeAll(async () => {
  watch = watchProcess();
  process.emitWarning = ((w: string | Error, ...rest: unknown[]) => {
    if (String(typeof w === 'string' ? w : w.message).startsWith('Keys with collection values')) return;
    (emitWarning as (...a: unknown[]) => void).call(process, w, ...rest);
  }) as typeof process.emitWarning;
  root = mkdtempSync(join(tmpdir(), 'nm-fuzz-config-'));
  configDir = join(root, 'config');
  mkdirSync(configDir);
  writeFileSync(join(configDir, 'a-good.yaml'), A_GOOD);
  writeFileSync(join(configDir, 'b-fuzz.yaml'), B_GOOD);
  // No periodic rescan and a debounce longer than the run: every rescan is the test's.
  cp = await ControlPlane.start({ configDir, stateDir: join(root, 'state'), listen: '127.0.0.1:0', admin: '127.0.0.1:0', debounceMs: 2_000_000_000, rescanMs: 0, logger: pino({ level: 'silent' }) });
});

afterAll(async () => {
  process.emitWarning = emitWarning;
  await cp?.stop();
  if (root) rmSync(root, { recursive: true, force: true });
  watch?.dispose();
});

function served(): Map<string, string> {
  return new Map([TYPE_ADDRESS, TYPE_AUTHORIZATION].flatMap((t) => [...cp.xds.versions(t)].map(([n, v]) => [`${t}|${n}`, v] as const)));
}

describe('fuzz: config YAML through the control plane and the k8s loader', () => {
  const budget = fuzzBudget(150);
  it(
    `never throws, reports file:line, and keeps the good file and the last good resources (${budget.runs} cases)`,
    async () => {
      const write = (text: string) => writeFileSync(join(configDir, 'b-fuzz.yaml'), text);
      const snapshot = cp.config.snapshot();
      expect(snapshot.problems, 'the seeds are valid').toEqual([]);
      const aObjects = Object.values(snapshot).flat().filter((o): o is { source: { file: string } } & Parameters<typeof identity>[0] => typeof o === 'object' && o !== null && 'source' in o);
      const aGood = aObjects.filter((o) => o.source.file === fileA());
      const bGood = aObjects.filter((o) => o.source.file === fileB()).map(identity);
      expect(aGood.length).toBe(4);
      expect(bGood.length).toBe(7);
      const baseline = served();
      // Served from a-good.yaml whatever b-fuzz.yaml says: its workload, service and policy.
      const aServed = [`${TYPE_ADDRESS}|Kubernetes//Pod/foo/web`, `${TYPE_ADDRESS}|foo/web.foo.svc.cluster.local`, `${TYPE_AUTHORIZATION}|foo/deny-bar`];
      for (const k of aServed) expect(baseline.has(k), k).toBe(true);
      const stats = { cases: 0, withErrors: 0, yamlErrors: 0 };

      const tick = progress('config', budget.runs);
      await fc.assert(
        // Also through the k8s loader's whole-directory path in one case of eight (it parses both files again).
        fc.asyncProperty(textArb, fc.nat(7).map((n) => n === 0), async (text, viaLoadConfigDir) => {
          tick();
          stats.cases++;
          try {
            write(text);
            cp.config.rescan(true); // ConfigSource, then the control plane's recompute (its 'change' listener)
            const loaded = viaLoadConfigDir ? loadConfigDir(configDir) : { errors: [] }; // the simulator's and the local agent's loader
            watch.check();

            const snap = cp.config.snapshot();
            const lines = text.split('\n').length;
            const problemsB = snap.problems.filter((p) => p.file === fileB());
            // Every problem names this file, a line inside it, and a reason.
            expect(snap.problems.filter((p) => p.file !== fileB()), 'problems outside the fuzzed file').toEqual([]);
            for (const p of [...problemsB, ...cp.configErrors().problems.filter((p) => p.file === fileB()), ...loaded.errors]) {
              expect(p.file).toBe(fileB());
              expect(p.line, `${p.file}:${p.line}: ${p.message}`).toBeGreaterThanOrEqual(1);
              expect(p.line, `${p.file}:${p.line}: ${p.message}`).toBeLessThanOrEqual(lines + 1);
              expect(p.message.length).toBeGreaterThan(0);
            }
            // A YAML syntax error is always reported, with NM_ERR_CONFIG_YAML.
            if (problemsB.some((p) => p.code === 'NM_ERR_CONFIG_YAML')) stats.yamlErrors++;
            else expect(parseAllDocuments(text).every((d) => d.errors.length === 0), 'a YAML syntax error is reported').toBe(true);
            // a-good.yaml: the very same objects, still served.
            const objs = Object.values(snap).flat().filter((o): o is (typeof aObjects)[number] => typeof o === 'object' && o !== null && 'source' in o);
            const nowA = objs.filter((o) => o.source.file === fileA());
            expect(nowA.length).toBe(aGood.length);
            nowA.forEach((o, i) => expect(o, identity(o)).toBe(aGood[i]));
            const now = served();
            for (const k of aServed) expect(now.has(k), `${k} still served`).toBe(true);
            // b-fuzz.yaml with errors: what it served before is still there (in its last good version or a new valid one).
            if (problemsB.some((p) => p.severity === 'error')) {
              stats.withErrors++;
              const ids = new Set(objs.filter((o) => o.source.file === fileB()).map(identity));
              for (const id of bGood) expect(ids.has(id), `${id} kept from the last good b-fuzz.yaml`).toBe(true);
            }
          } finally {
            // Back to the good file, even after a failed check (fast-check then replays smaller inputs).
            write(B_GOOD);
            cp.config.rescan(true);
          }
          watch.check();
          // Exactly the baseline again, nothing left over.
          expect(cp.config.snapshot().problems).toEqual([]);
          expect(served()).toEqual(baseline);
        }),
        fuzzParams(budget, FOUND),
      );
      if (budget.runs >= 10_000) process.stderr.write(`fuzz config: ${JSON.stringify(stats)}\n`);
      // The positive twin: the mutations produced broken files, and valid ones.
      expect(stats.withErrors).toBeGreaterThan(0);
      expect(stats.withErrors).toBeLessThan(stats.cases);
    },
    budget.testTimeoutMs,
  );
});
