// The Helm chart deploy/helm/nodemesh, rendered by src/deploy/ (no helm can be installed here):
// the committed plain manifests equal a fresh render, every object validates against the
// Kubernetes OpenAPI schemas (kubernetes-models) with no unknown field, the CRDs are valid
// apiextensions.k8s.io/v1, and values change what they say. Negatives prove the validator live.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse } from 'yaml';
import { describe, expect, it } from 'vitest';
import { renderChart, type RenderedDoc } from '../../src/deploy/chart.js';
import { CHART_DIR, plainManifests, PLAIN_RELEASE } from '../../src/deploy/manifests.js';
import { validateObject } from '../helpers/k8s-validate.js';
import { REPO } from '../helpers/sim.js';

const obj = (d: RenderedDoc) => parse(d.text) as Record<string, any>;
const render = (values: Record<string, unknown> = {}) => renderChart(CHART_DIR, { ...PLAIN_RELEASE, values: [...(PLAIN_RELEASE.values ?? []), values] });
const find = (docs: RenderedDoc[], kind: string, name?: string) => docs.map(obj).find((o) => o.kind === kind && (!name || o.metadata.name === name))!;

describe('deploy/helm/nodemesh', () => {
  it('matches the committed deploy/manifests/ (run `make manifests` after editing the chart)', () => {
    for (const [name, text] of Object.entries(plainManifests())) {
      expect(readFileSync(join(REPO, 'deploy', 'manifests', name), 'utf8'), `deploy/manifests/${name} is stale: run make manifests`).toBe(text);
    }
  });

  it('renders the objects an install needs, in helm install order', () => {
    const { crds, docs } = render();
    expect(docs.map((d) => `${d.kind}/${d.name}`)).toEqual([
      'Namespace/nodemesh-system',
      'PodDisruptionBudget/nodemesh-control-plane',
      'ServiceAccount/nodemesh-control-plane',
      'ServiceAccount/nodemesh-agent',
      'ClusterRole/nodemesh-control-plane',
      'ClusterRole/nodemesh-agent',
      'ClusterRoleBinding/nodemesh-control-plane',
      'ClusterRoleBinding/nodemesh-agent',
      'Service/nodemesh-control-plane',
      'DaemonSet/nodemesh-agent',
      'Deployment/nodemesh-control-plane',
    ]);
    expect(crds.map((d) => d.name).sort()).toEqual([
      'authorizationpolicies.security.istio.io',
      'destinationrules.networking.istio.io',
      'httproutes.gateway.networking.k8s.io',
      'peerauthentications.security.istio.io',
      'requestauthentications.security.istio.io',
      'virtualservices.networking.istio.io',
    ]);
  });

  it('validates every rendered object and CRD against the Kubernetes OpenAPI schemas, with no unknown field', async () => {
    const { crds, docs } = render();
    for (const d of [...crds, ...docs]) {
      const r = await validateObject(obj(d));
      expect(r.problems, `${d.source} ${d.kind}/${d.name}`).toEqual([]);
    }
    for (const c of crds.map(obj)) {
      expect(c.apiVersion).toBe('apiextensions.k8s.io/v1');
      // A structural schema on every served version, exactly one storage version, status as a subresource.
      expect(c.spec.versions.filter((v: any) => v.storage)).toHaveLength(1);
      for (const v of c.spec.versions) {
        expect(v.schema.openAPIV3Schema.type).toBe('object');
        expect(v.schema.openAPIV3Schema.properties.spec['x-kubernetes-preserve-unknown-fields']).toBe(true);
        expect(v.subresources).toEqual({ status: {} });
      }
    }
  });

  it('the validator is live: a wrong type, a missing required field and an unknown field fail, naming the field', async () => {
    const ds = find(render().docs, 'DaemonSet');
    const good = await validateObject(ds);
    expect(good).toEqual({ ok: true, problems: [] });
    const wrongType = structuredClone(ds);
    wrongType.spec.template.spec.terminationGracePeriodSeconds = 'forty-five';
    const missing = structuredClone(ds);
    delete missing.spec.template.spec.containers[0].name;
    const unknown = structuredClone(ds);
    unknown.spec.template.spec.tolerationz = [];
    const badEnum = structuredClone(find(render().docs, 'ClusterRoleBinding'));
    delete badEnum.roleRef.kind;
    const cases: [Record<string, any>, string][] = [
      [wrongType, '/spec/template/spec/terminationGracePeriodSeconds must be integer'],
      [missing, '/spec/template/spec/containers/0/name must have required property'],
      [unknown, '/spec/template/spec/tolerationz is an unknown field'],
      [badEnum, '/roleRef/kind must have required property'],
    ];
    for (const [o, problem] of cases) {
      const r = await validateObject(o);
      expect(r.ok).toBe(false);
      expect(r.problems.join('\n')).toContain(problem);
    }
    // A CRD with a schema that is not an object, and one without names, fail as apiextensions/v1.
    const crd = obj(render().crds[0]!);
    const badCrd = structuredClone(crd);
    badCrd.spec.versions[0].served = 'yes';
    delete badCrd.spec.names;
    const r = await validateObject(badCrd);
    expect(r.problems.join('\n')).toContain('/spec/versions/0/served must be boolean');
    expect(r.problems.join('\n')).toContain('/spec/names must have required property');
    expect((await validateObject(crd)).ok).toBe(true);
  });

  it('gives the control plane least privilege: list/watch what its informers read, status writes, TokenReviews', () => {
    const rules = find(render().docs, 'ClusterRole', 'nodemesh-control-plane').rules as { apiGroups: string[]; resources: string[]; verbs: string[] }[];
    const verbs = (group: string, res: string) => rules.filter((r) => r.apiGroups.includes(group) && r.resources.includes(res)).flatMap((r) => r.verbs).sort();
    for (const [g, r] of [['', 'namespaces'], ['', 'services'], ['discovery.k8s.io', 'endpointslices'], ['security.istio.io', 'authorizationpolicies'], ['security.istio.io', 'peerauthentications'], ['security.istio.io', 'requestauthentications'], ['networking.istio.io', 'virtualservices'], ['networking.istio.io', 'destinationrules'], ['gateway.networking.k8s.io', 'httproutes']] as const) {
      expect(verbs(g, r), `${g}/${r}`).toEqual(['list', 'watch']);
    }
    expect(verbs('gateway.networking.k8s.io', 'httproutes/status')).toEqual(['patch', 'update']);
    expect(verbs('security.istio.io', 'authorizationpolicies/status')).toEqual(['patch', 'update']);
    expect(verbs('authentication.k8s.io', 'tokenreviews')).toEqual(['create']);
    // Pods also by name (the pod an agent's token is bound to), and Nodes by name (their podCIDRs).
    expect(verbs('', 'pods')).toEqual(['get', 'list', 'watch']);
    expect(verbs('', 'nodes')).toEqual(['get']);
    // Nothing else: no secrets, no wildcard, no writes beyond the two status subresources.
    const all = rules.flatMap((r) => r.resources);
    expect(all).not.toContain('secrets');
    expect(rules.flatMap((r) => [...r.verbs, ...r.resources, ...r.apiGroups])).not.toContain('*');
    expect(rules.filter((r) => r.verbs.some((v) => !['list', 'watch', 'get'].includes(v))).flatMap((r) => r.resources).sort()).toEqual(['authorizationpolicies/status', 'httproutes/status', 'tokenreviews']);
    // The agent's pod watch: pods on its node (RBAC cannot restrict a field selector) and the
    // namespaces' opt-in labels, list and watch only, nothing else.
    expect(find(render().docs, 'ClusterRole', 'nodemesh-agent').rules).toEqual([{ apiGroups: [''], resources: ['pods', 'namespaces'], verbs: ['list', 'watch'] }]);
  });

  it('runs one control plane with a PDB that never blocks a node drain, and refuses replicas it cannot run', () => {
    const docs = render().docs;
    expect(find(docs, 'Deployment').spec.replicas).toBe(1);
    expect(find(docs, 'PodDisruptionBudget').spec).toEqual({ maxUnavailable: 1, selector: { matchLabels: { app: 'nodemesh-control-plane' } } });
    expect(() => render({ controlPlane: { replicas: 2 } })).toThrow(expect.objectContaining({ code: 'NM_ERR_CHART', message: expect.stringMatching(/control-plane\.yaml:\d+: controlPlane\.replicas: at most 1/) }));
    expect(render({ controlPlane: { podDisruptionBudget: { enabled: false } } }).docs.some((d) => d.kind === 'PodDisruptionBudget')).toBe(false);
  });

  it('gives the agent a projected ServiceAccount token with audience nodemesh, and a node token only for a config-dir control plane', () => {
    const pod = find(render().docs, 'DaemonSet').spec.template.spec;
    const vol = pod.volumes.find((v: any) => v.projected);
    expect(vol.projected.sources).toEqual([{ serviceAccountToken: { audience: 'nodemesh', expirationSeconds: 3600, path: 'nodemesh-token' } }]);
    const agent = pod.containers.find((c: any) => c.name === 'agent');
    expect(agent.volumeMounts).toContainEqual({ name: vol.name, mountPath: '/var/run/secrets/tokens', readOnly: true });
    // Kubernetes source (the default): the projected token, nothing from the host, no node secret.
    expect(agent.args).toContain('--token-file=/var/run/secrets/tokens/nodemesh-token');
    expect(pod.volumes.some((v: any) => v.name === 'node-token')).toBe(false);
    expect(find(render().docs, 'Deployment').spec.template.spec.containers[0].args.some((a: string) => a.startsWith('--node-secret='))).toBe(false);
    // Config-dir source: the host's node token, and the control plane's node secret.
    const cfg = render({ controlPlane: { source: 'config' } }).docs;
    const cfgAgent = find(cfg, 'DaemonSet').spec.template.spec.containers.find((c: any) => c.name === 'agent');
    expect(cfgAgent.args).toContain('--token-file=/etc/nodemesh/node-token');
    expect(cfgAgent.args).not.toContain('--in-cluster'); // no pod watch without the API
    expect(find(cfg, 'DaemonSet').spec.template.spec.volumes.find((v: any) => v.name === 'node-token').hostPath.path).toBe('/etc/nodemesh');
    expect(find(cfg, 'Deployment').spec.template.spec.containers[0].args).toContain('--node-secret=/etc/nodemesh/bootstrap/node-secret');
  });

  it('follows its values: hostPID, the watcher, the image, the source, the CNI dirs, the drain', () => {
    const def = find(render().docs, 'DaemonSet').spec.template.spec;
    expect(def.hostPID).toBe(true); // the pod watch finds a running pod's netns through /proc/<pid>/ns/net
    expect(def.containers.find((c: any) => c.name === 'agent').args).toContain('--in-cluster'); // ... watching the API as its service account
    expect(def.containers.map((c: any) => c.name)).toEqual(['agent', 'install-cni']);
    const ds = find(render({ agent: { hostPID: false, drainSeconds: 60 }, cni: { watch: false, confDir: '/etc/cni/multus/net.d' }, image: { repository: 'reg.example/nodemesh', tag: '1.2.3' } }).docs, 'DaemonSet').spec.template.spec;
    expect(ds.hostPID).toBeUndefined();
    expect(ds.terminationGracePeriodSeconds).toBe(75);
    expect(ds.containers.map((c: any) => c.name)).toEqual(['agent']);
    expect(ds.containers[0].image).toBe('reg.example/nodemesh:1.2.3');
    expect(ds.containers[0].args).toContain('--drain-seconds=60');
    expect(ds.volumes.find((v: any) => v.name === 'cni-conf').hostPath.path).toBe('/etc/cni/multus/net.d');
    expect(find(render({ image: { tag: '' } }).docs, 'Deployment').spec.template.spec.containers[0].image).toBe('nodemesh:0.1.0');
    const cp = find(render({ controlPlane: { source: 'config' } }).docs, 'Deployment').spec.template.spec;
    expect(cp.containers[0].args).toContain('--config=/etc/nodemesh/config');
    expect(cp.containers[0].args).not.toContain('--in-cluster');
    expect(cp.volumes.find((v: any) => v.name === 'config')).toEqual({ name: 'config', configMap: { name: 'nodemesh-config' } });
    expect(() => render({ controlPlane: { source: 'etcd' } })).toThrow(/controlPlane.source must be kubernetes or config/);
    expect(() => render({ image: { repository: '' } })).toThrow(/image.repository is required/);
    // Without createNamespace (helm install --create-namespace) there is no Namespace object.
    expect(renderChart(CHART_DIR, { namespace: 'mesh' }).docs.some((d) => d.kind === 'Namespace')).toBe(false);
    expect(find(renderChart(CHART_DIR, { namespace: 'mesh' }).docs, 'DaemonSet').spec.template.spec.containers[0].args).toContain('--control-plane=nodemesh-control-plane.mesh.svc:15012');
  });

  it('runs install-cni as `nodemesh install-cni`, not a shell copy, with the host dirs mounted', () => {
    const pod = find(render().docs, 'DaemonSet').spec.template.spec;
    const [init] = pod.initContainers;
    expect(init.command).toBeUndefined();
    expect(init.args[0]).toBe('install-cni');
    expect(init.args).toContain('--agent-socket=/var/run/nodemesh/agent/cni.sock');
    expect(init.volumeMounts.map((m: any) => m.mountPath).sort()).toEqual(['/host/etc/cni/net.d', '/host/opt/cni/bin']);
    const watcher = pod.containers.find((c: any) => c.name === 'install-cni');
    expect(watcher.args.slice(0, 3)).toEqual(['install-cni', '--watch', '--on-exit=$(NODEMESH_CNI_ON_EXIT)']);
    expect(watcher.env).toContainEqual({ name: 'NODEMESH_CNI_ON_EXIT', value: 'keep' });
  });
});
