import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { testTempDir } from '../helpers/tmp.js';
import { describe, expect, it } from 'vitest';
import { isAmbient, loadConfigDir, loadConfigDirStrict, parseConfigText, type Pod } from '../../src/k8s/index.js';
import { deriveUid } from '../../src/k8s/load.js';

function dirWith(files: Record<string, string>): string {
  const d = testTempDir('nm-k8s-');
  for (const [f, t] of Object.entries(files)) writeFileSync(join(d, f), t);
  return d;
}

const pod = (name: string, extra = '') => `apiVersion: v1
kind: Pod
metadata:
  name: ${name}
  namespace: web
spec:
  containers:
  - name: main
    command: [python3, -m, http.server]
    args: ["8080"]
    ports: [{ containerPort: 8080, name: http }]
${extra}`;

describe('Kubernetes YAML loading', () => {
  it('reads multi-document files with typed pods and the line each document starts on', () => {
    const r = parseConfigText(`# header\n${pod('a')}---\n${pod('b')}`, 'pods.yaml');
    expect(r.errors).toEqual([]);
    const [a, b] = r.objects as Pod[];
    expect(a!.spec.containers[0]!.command).toEqual(['python3', '-m', 'http.server']);
    expect(a!.spec.serviceAccountName).toBe('default');
    expect(a!.source).toEqual({ file: 'pods.yaml', line: 2 });
    expect(b!.source.line).toBe(14);
  });

  it('names file and line for malformed YAML, and keeps the good files', () => {
    const d = dirWith({ 'a.yaml': pod('good'), 'b.yaml': 'apiVersion: v1\nkind: Pod\nmetadata: {name: x\n  bad: [' });
    const r = loadConfigDir(d);
    expect(r.config.pods.map((p) => p.metadata.name)).toEqual(['good']);
    expect(r.errors).toHaveLength(1);
    expect(r.errors[0]!.code).toBe('NM_ERR_CONFIG_YAML');
    expect(r.errors[0]!.file).toMatch(/b\.yaml$/);
    expect(r.errors[0]!.line).toBeGreaterThanOrEqual(3);
  });

  it('rejects a Pod with no command with the field path', () => {
    const r = parseConfigText('apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers:\n  - name: c\n    image: nginx\n', 'x.yaml');
    expect(r.errors[0]!.code).toBe('NM_ERR_CONFIG_INVALID');
    expect(r.errors[0]!.message).toMatch(/spec\.containers\[0\]\.command is required/);
  });

  it('rejects wrong field types and bad ports', () => {
    const r = parseConfigText(pod('p').replace('containerPort: 8080', 'containerPort: "eighty"'), 'x.yaml');
    expect(r.errors[0]!.message).toMatch(/containerPort must be a port number/);
    const r2 = parseConfigText('apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {clusterIP: 10.96.0.300, ports: [{port: 80}]}\n', 's.yaml');
    expect(r2.errors[0]!.message).toMatch(/clusterIP .* is not an IPv4 address/);
  });

  it('rejects a number in a string list, as the Kubernetes API does, naming the entry; a quoted one loads', () => {
    const r = parseConfigText(pod('p').replace('args: ["8080"]', 'args: [--port, 8080]'), 'x.yaml');
    expect(r.objects).toEqual([]);
    expect(r.errors[0]!.code).toBe('NM_ERR_CONFIG_INVALID');
    expect(r.errors[0]!.message).toMatch(/spec\.containers\[0\]\.args\[1\] must be a string, got number 8080 \(quote it\)/);
    const ok = parseConfigText(pod('p').replace('args: ["8080"]', 'args: [--port, "8080"]'), 'x.yaml');
    expect(ok.errors).toEqual([]);
    expect((ok.objects[0] as Pod).spec.containers[0]!.args).toEqual(['--port', '8080']);
  });

  it('reports a duplicate resource with where the first one is', () => {
    const d = dirWith({ 'a.yaml': pod('same'), 'b.yaml': pod('same') });
    const r = loadConfigDir(d);
    expect(r.errors[0]!.code).toBe('NM_ERR_CONFIG_CONFLICT');
    expect(r.errors[0]!.message).toMatch(/already defined at .*a\.yaml:1/);
    expect(() => loadConfigDirStrict(d)).toThrowError(expect.objectContaining({ code: 'NM_ERR_CONFIG_CONFLICT' }));
  });

  it('derives a stable UID when none is given', () => {
    const u = deriveUid('Pod', 'web', 'a');
    expect(u).toBe(deriveUid('Pod', 'web', 'a'));
    expect(u).not.toBe(deriveUid('Pod', 'web', 'b'));
    expect(u).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-a[0-9a-f]{3}-[0-9a-f]{12}$/);
  });

  it('enrolls by pod label first, then by namespace label', () => {
    const objs = parseConfigText(
      `apiVersion: v1\nkind: Namespace\nmetadata: {name: web, labels: {nodemesh.io/dataplane-mode: ambient}}\n---\n${pod('in')}---\n${pod('out').replace('namespace: web', 'namespace: web\n  labels: {nodemesh.io/dataplane-mode: none}')}`,
      'x.yaml',
    ).objects;
    const nss = objs.filter((o) => o.kind === 'Namespace') as never[];
    const pods = objs.filter((o) => o.kind === 'Pod') as Pod[];
    expect(pods.map((p) => isAmbient(p, nss))).toEqual([true, false]);
  });
});
