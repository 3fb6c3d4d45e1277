// Bad config files: file:line:reason everywhere (log, /debug/config-errors, --check), and the
// resources already served stay served.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { controlPlaneCommand } from '../../src/cli/controlplane.js';
import { checkConfigDir } from '../../src/controlplane/index.js';
import { ConfigSource } from '../../src/controlplane/sources.js';
import { parseConfigFile, type ConfigProblem } from '../../src/controlplane/validate.js';
import { ProxyState } from '../../src/state/index.js';
import { XdsClient } from '../../src/xds/index.js';
import { NS_FOO, pod, startTestControlPlane, waitFor, type TestControlPlane } from '../helpers/xds.js';

const POLICY = (action: string, ns = 'foo') => `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: p1
  namespace: ${ns}
spec:
  action: ${action}
  rules:
    - from:
        - source:
            namespaces: ["bar"]
`;

let env: TestControlPlane | undefined;
const cleanups: (() => void | Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0)) await c();
  await env?.close();
  env = undefined;
  vi.restoreAllMocks();
});

function tempDir(files: Record<string, string>): string {
  const dir = mkdtempSync(join(tmpdir(), 'nodemesh-check-'));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  for (const [f, t] of Object.entries(files)) writeFileSync(join(dir, f), t);
  return dir;
}

function get(address: string, path: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const [host, port] = [address.slice(0, address.lastIndexOf(':')), Number(address.slice(address.lastIndexOf(':') + 1))];
    request({ host, port, path }, (res) => {
      let body = '';
      res.on('data', (d: Buffer) => (body += d.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    })
      .on('error', reject)
      .end();
  });
}

const only = (ps: ConfigProblem[]) => ps.map((p) => ({ code: p.code, line: p.line, severity: p.severity }));

describe('config validation', () => {
  it('reports a YAML syntax error with its line', () => {
    const r = parseConfigFile('apiVersion: v1\nkind: Pod\nmetadata:\n\tname: web\n', 'bad.yaml');
    expect(r.problems).toEqual([expect.objectContaining({ code: 'NM_ERR_CONFIG_YAML', file: 'bad.yaml', line: 4, message: 'Tabs are not allowed as indentation' })]);
    const dup = parseConfigFile('---\napiVersion: v1\nkind: Pod\nkind: Service\n', 'dup.yaml');
    expect(dup.problems).toEqual([expect.objectContaining({ code: 'NM_ERR_CONFIG_YAML', line: 4 })]);
  });

  it('reports an unknown enum at the line of the field', () => {
    const r = parseConfigFile(POLICY('PERMIT'), 'p.yaml');
    expect(only(r.problems)).toEqual([{ code: 'NM_ERR_CONFIG_INVALID', line: 7, severity: 'error' }]);
    expect(r.problems[0]!.message).toMatch(/spec\.action: unknown value "PERMIT"; expected one of ALLOW, DENY, AUDIT, CUSTOM/);
    expect(r.problems[0]!.resource).toBe('AuthorizationPolicy foo/p1');
  });

  it('reports wrong field types at the line of the field', () => {
    const wrong = POLICY('ALLOW').replace('namespaces: ["bar"]', 'namespaces: bar');
    const r = parseConfigFile(wrong, 'p.yaml');
    expect(only(r.problems)).toEqual([{ code: 'NM_ERR_CONFIG_INVALID', line: 11, severity: 'error' }]);
    expect(r.problems[0]!.message).toMatch(/spec\.rules\[0\]\.from\[0\]\.source\.namespaces must be a list, got string/);
    const port = parseConfigFile(POLICY('ALLOW').replace('- from:', '- to:\n        - operation:\n            ports: [8080]\n      from:'), 'p.yaml');
    expect(port.problems[0]!.message).toMatch(/ports\[0\] must be a string, got number 8080 \(quote it\)/);
    const ip = parseConfigFile(POLICY('ALLOW').replace('namespaces: ["bar"]', 'ipBlocks: ["10.0.0.0/33"]'), 'p.yaml');
    expect(ip.problems[0]!.message).toMatch(/ipBlocks\[0\]: invalid CIDR/);
    const typo = parseConfigFile(POLICY('ALLOW').replace('namespaces: ["bar"]', 'namespace: ["bar"]'), 'p.yaml');
    expect(typo.problems[0]!.message).toMatch(/source\.namespace: unknown field/);
  });

  it('validates PeerAuthentication and HTTPRoute shapes', () => {
    const pa = parseConfigFile('apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata:\n  name: d\n  namespace: foo\nspec:\n  mtls:\n    mode: STRICTEST\n', 'pa.yaml');
    expect(only(pa.problems)).toEqual([{ code: 'NM_ERR_CONFIG_INVALID', line: 8, severity: 'error' }]);
    const route = `apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: r
  namespace: foo
spec:
  parentRefs: [{kind: Service, group: "", name: web, port: 80}]
  rules:
    - matches: [{path: {type: Prefix, value: /api}}]
      backendRefs: [{name: web-v2, port: 80, weight: 10}]
`;
    const bad = parseConfigFile(route, 'r.yaml');
    expect(only(bad.problems)).toEqual([{ code: 'NM_ERR_CONFIG_INVALID', line: 9, severity: 'error' }]);
    expect(bad.problems[0]!.message).toMatch(/path\.type: unknown value "Prefix"; expected one of Exact, PathPrefix, RegularExpression/);
    const good = parseConfigFile(route.replace('Prefix,', 'PathPrefix,'), 'r.yaml');
    expect(good.problems).toEqual([]);
    expect(good.objects[0]).toMatchObject({ kind: 'HTTPRoute', route: { parentRefs: [{ name: 'web', kind: 'Service', group: '', port: 80 }], rules: [{ backendRefs: [{ name: 'web-v2', weight: 10 }] }] } });
  });
});

describe('nodemesh control-plane --check', () => {
  it('exits 1 and prints file:line for every error; good files are still counted', async () => {
    const dir = tempDir({ 'a-ns.yaml': NS_FOO, 'b-bad.yaml': POLICY('PERMIT'), 'c-syntax.yaml': 'kind: Pod\nmetadata: [\n', 'd-pod.yaml': pod('web', { ip: '10.1.0.5' }) });
    const out: string[] = [];
    vi.spyOn(process.stdout, 'write').mockImplementation((s: string | Uint8Array) => {
      out.push(String(s));
      return true;
    });
    const code = await controlPlaneCommand.run(['--check', dir]);
    expect(code).toBe(1);
    const text = out.join('');
    expect(text).toMatch(/b-bad\.yaml:7: error: AuthorizationPolicy foo\/p1: spec\.action: unknown value "PERMIT".*\(NM_ERR_CONFIG_INVALID\)/);
    expect(text).toMatch(/c-syntax\.yaml:\d+: error: .*\(NM_ERR_CONFIG_YAML\)/);
    expect(text).toMatch(/2 error\(s\), 0 warning\(s\); 1 pod\(s\)/);
  });

  it('exits 0 for a clean directory, printing warnings', async () => {
    const l7 = POLICY('ALLOW').replace('- from:', '- to:\n        - operation:\n            methods: ["GET"]\n      from:');
    const dir = tempDir({ 'ns.yaml': NS_FOO, 'p.yaml': l7 });
    const out: string[] = [];
    vi.spyOn(process.stdout, 'write').mockImplementation((s: string | Uint8Array) => {
      out.push(String(s));
      return true;
    });
    expect(await controlPlaneCommand.run(['--check', dir])).toBe(0);
    expect(out.join('')).toMatch(/p\.yaml:9: warning: AuthorizationPolicy foo\/p1: rule 0 uses HTTP attributes/);
    expect(checkConfigDir(dir).warnings).toBe(1);
  });

  it('fails with a usage error for a missing directory', async () => {
    await expect(controlPlaneCommand.run(['--check', '/nonexistent/nodemesh'])).rejects.toMatchObject({ code: 'NM_ERR_CONFIG_INVALID' });
  });
});

describe('a running control plane with bad files', () => {
  it('serves good files, reports bad ones on /debug/config-errors, and keeps the last good version', async () => {
    env = await startTestControlPlane({ 'ns.yaml': NS_FOO, 'policy.yaml': POLICY('DENY'), 'web.yaml': pod('web', { ip: '10.1.0.5', node: 'n1' }) });
    const state = new ProxyState();
    const c = new XdsClient({ ...env.conn('n1'), state });
    cleanups.push(() => c.stop());
    c.start();
    await c.ready;
    expect(state.policy('foo/p1')?.action).toBe('DENY');

    let r = await get(env.cp.adminAddress, '/healthz/ready');
    expect(r.status).toBe(200);
    r = await get(env.cp.adminAddress, '/debug/config-errors');
    expect(JSON.parse(r.body)).toEqual({ errors: 0, warnings: 0, problems: [] });

    // Break the policy (unknown enum) and add a syntax error elsewhere; add a good pod too.
    env.write('policy.yaml', POLICY('PERMIT'));
    env.write('broken.yaml', 'kind: [\n');
    env.write('db.yaml', pod('db', { ip: '10.1.0.6', node: 'n1' }));
    await waitFor(() => state.workloadByIp('10.1.0.6') !== undefined, 'the good new pod', 2000);
    r = await get(env.cp.adminAddress, '/debug/config-errors');
    const errs = JSON.parse(r.body) as { errors: number; problems: ConfigProblem[] };
    expect(errs.errors).toBe(2);
    expect(errs.problems).toEqual(
      expect.arrayContaining([
        expect.objectContaining({ code: 'NM_ERR_CONFIG_INVALID', line: 7, resource: 'AuthorizationPolicy foo/p1', file: expect.stringMatching(/policy\.yaml$/) }),
        expect.objectContaining({ code: 'NM_ERR_CONFIG_YAML', file: expect.stringMatching(/broken\.yaml$/) }),
      ]),
    );
    // The last good version of the broken policy is still served.
    expect(state.policy('foo/p1')?.action).toBe('DENY');
    expect(env.cp.xds.versions('type.googleapis.com/istio.security.Authorization').has('foo/p1')).toBe(true);

    // A YAML syntax error in the web pod's file keeps the pod.
    env.write('web.yaml', 'apiVersion: v1\nkind: Pod\nmetadata:\n  name: [web\n');
    await waitFor(() => env!.cp.problems().some((p) => p.file.endsWith('web.yaml')), 'the web.yaml error');
    expect(state.workloadByIp('10.1.0.5')).toBeDefined();

    // A policy that cannot be translated (AUDIT) is an error too: the last good one stays.
    env.write('policy.yaml', POLICY('AUDIT'));
    await waitFor(() => env!.cp.problems().some((p) => p.code === 'NM_ERR_POLICY' && p.line === 7), 'the AUDIT error');
    expect(state.policy('foo/p1')?.action).toBe('DENY');

    // Fixing the policy serves the new version and clears its error.
    env.write('policy.yaml', POLICY('ALLOW'));
    await waitFor(() => state.policy('foo/p1')?.action === 'ALLOW', 'the fixed policy', 2000);
    expect(env.cp.problems().some((p) => p.file.endsWith('policy.yaml'))).toBe(false);

    const res = JSON.parse((await get(env.cp.adminAddress, '/debug/resources')).body) as { workloads: { uid: string; addresses: string[] }[] };
    expect(res.workloads.map((w) => w.addresses[0]).sort()).toEqual(['10.1.0.5', '10.1.0.6']);
  });
});

describe('a conflict is an error of the file that loses it', () => {
  const sa = (name: string, ns = 'foo') => `apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: ${name}\n  namespace: ${ns}\n`;
  const names = (src: ConfigSource) => src.snapshot().serviceAccounts.map((s) => `${s.metadata.name}@${s.source.file.split('/').at(-1)}`).sort();

  it('keeps what the file served before, whether the duplicate is in the file itself or in another, and lets go once resolved', () => {
    const dir = tempDir({ 'a.yaml': sa('shared'), 'b.yaml': [sa('one'), sa('two')].join('---\n') });
    const src = new ConfigSource(dir, { rescanMs: 0 });
    src.rescan(true);
    expect(names(src)).toEqual(['one@b.yaml', 'shared@a.yaml', 'two@b.yaml']);
    expect(src.snapshot().problems).toEqual([]);

    // b.yaml renames `two` to a name a.yaml already has: a conflict, so `two` stays served.
    writeFileSync(join(dir, 'b.yaml'), [sa('one'), sa('shared')].join('---\n'));
    src.rescan(true);
    expect(src.snapshot().problems).toEqual([expect.objectContaining({ code: 'NM_ERR_CONFIG_CONFLICT', file: expect.stringMatching(/b\.yaml$/), line: 7 })]);
    expect(names(src)).toEqual(['one@b.yaml', 'shared@a.yaml', 'two@b.yaml']);

    // The same within one file: `one` twice, `two` gone; `two` stays.
    writeFileSync(join(dir, 'b.yaml'), [sa('one'), sa('one')].join('---\n'));
    src.rescan(true);
    expect(src.snapshot().problems).toEqual([expect.objectContaining({ code: 'NM_ERR_CONFIG_CONFLICT', file: expect.stringMatching(/b\.yaml$/), line: 7 })]);
    expect(names(src)).toEqual(['one@b.yaml', 'shared@a.yaml', 'two@b.yaml']);

    // Back to a cross-file conflict, then resolved from the other side: a.yaml drops `shared`.
    writeFileSync(join(dir, 'b.yaml'), [sa('one'), sa('shared')].join('---\n'));
    src.rescan(true);
    writeFileSync(join(dir, 'a.yaml'), sa('other'));
    src.rescan(true);
    // b.yaml is clean now: it serves exactly its text, and the kept `two` goes.
    expect(src.snapshot().problems).toEqual([]);
    expect(names(src)).toEqual(['one@b.yaml', 'other@a.yaml', 'shared@b.yaml']);

    // The positive case of the same path: a clean rename withdraws the old name.
    writeFileSync(join(dir, 'b.yaml'), [sa('one'), sa('three')].join('---\n'));
    src.rescan(true);
    expect(names(src)).toEqual(['one@b.yaml', 'other@a.yaml', 'three@b.yaml']);
  });
});
