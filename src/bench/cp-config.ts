// The control-plane benchmark's generated mesh: 1,000 Pods with IPs over 20 nodes, 100
// Services, and 100 AuthorizationPolicies of every scope and action, one file per policy, plus
// the probe policy whose principal names the revision each change writes.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Action, Scope } from '../state/index.js';

export const NAMESPACES = 20;
export const PODS_PER_NAMESPACE = 50;
export const SERVICES_PER_NAMESPACE = 5;
export const POLICIES = 100;
export const NODES = 20;
const ROOT_NAMESPACE = 'istio-system';

const ns = (i: number): string => `bench-${String(i).padStart(2, '0')}`;
/** The name of node `i` (pods are spread over node-00 … node-19; on Kubernetes one agent runs on each node). */
export const nodeName = (i: number): string => `node-${String(i).padStart(2, '0')}`;
const principal = (n: number, sa: string): string => `cluster.local/ns/${ns(n % NAMESPACES)}/sa/${sa}`;

/** The policy the benchmark edits: its only principal names the revision (see xds-agent probeSeq). */
export function probePolicy(name: string, seq: number): string {
  return `# Edited by the benchmark: each revision changes the principal below.
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: ${name}
  namespace: ${ns(0)}
spec:
  selector:
    matchLabels:
      app: svc-0
  action: ALLOW
  rules:
    - from:
        - source:
            principals: ["${principal(1, `rev-${seq}`)}"]
      to:
        - operation:
            ports: ["8080"]
`;
}

/** The 98 other policies: every scope, both actions, principals, namespaces, IP blocks, ports. */
function policy(i: number): { action: Action; scope: Scope; yaml: string } {
  const head = (namespace: string, action: string, selector?: string) =>
    `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: p${String(i).padStart(3, '0')}
  namespace: ${namespace}
spec:
${selector ? `  selector:\n    matchLabels:\n      app: ${selector}\n` : ''}  action: ${action}
  rules:
`;
  if (i === 0) return { action: 'DENY', scope: 'GLOBAL', yaml: head(ROOT_NAMESPACE, 'DENY') + `    - from:\n        - source:\n            ipBlocks: ["203.0.113.0/24", "198.51.100.0/24"]\n` };
  // A selector in the root namespace selects in every namespace.
  if (i === 1)
    return {
      action: 'ALLOW',
      scope: 'WORKLOAD_SELECTOR',
      yaml: head(ROOT_NAMESPACE, 'ALLOW', 'svc-4') + `    - from:\n        - source:\n            namespaces: ["${ROOT_NAMESPACE}"]\n      to:\n        - operation:\n            ports: ["9090"]\n`,
    };
  const n = i % NAMESPACES;
  const k = i % SERVICES_PER_NAMESPACE;
  switch (i % 5) {
    case 0:
      return {
        action: 'ALLOW',
        scope: 'NAMESPACE',
        yaml: head(ns(n), 'ALLOW') + `    - from:\n        - source:\n            namespaces: ["${ns(n)}", "${ns(n + 1)}"]\n      to:\n        - operation:\n            ports: ["8080", "9090"]\n`,
      };
    case 1:
      return {
        action: 'ALLOW',
        scope: 'WORKLOAD_SELECTOR',
        yaml:
          head(ns(n), 'ALLOW', `svc-${k}`) +
          `    - from:\n        - source:\n            principals: ["${principal(n + 1, 'sa-0')}", "${principal(n + 2, 'sa-1')}", "${principal(n + 3, '*')}"]\n      to:\n        - operation:\n            ports: ["8080"]\n`,
      };
    case 2:
      return {
        action: 'DENY',
        scope: 'WORKLOAD_SELECTOR',
        yaml: head(ns(n), 'DENY', `svc-${k}`) + `    - from:\n        - source:\n            ipBlocks: ["192.168.${i}.0/24"]\n            notNamespaces: ["${ns(n)}"]\n      to:\n        - operation:\n            notPorts: ["15021"]\n`,
      };
    case 3:
      return {
        action: 'ALLOW',
        scope: 'WORKLOAD_SELECTOR',
        yaml:
          head(ns(n), 'ALLOW', `svc-${k}`) +
          `    - from:\n        - source:\n            serviceAccounts: ["${ns(n)}/sa-${(k + 1) % SERVICES_PER_NAMESPACE}"]\n      when:\n        - key: destination.port\n          values: ["9090"]\n`,
      };
    default:
      return {
        action: 'DENY',
        scope: 'WORKLOAD_SELECTOR',
        yaml: head(ns(n), 'DENY', `svc-${k}`) + `    - from:\n        - source:\n            notPrincipals: ["cluster.local/ns/${ns(n)}/*"]\n      to:\n        - operation:\n            ports: ["9090"]\n`,
      };
  }
}

export interface BenchConfig {
  /** The probe policy edited in place, and the one replaced by rename. */
  probe: { file: string; key: string; name: string };
  renameProbe: { file: string; key: string; name: string };
  pods: number;
  services: number;
  policies: { total: number; allow: number; deny: number; global: number; namespace: number; selector: number };
}

/** Writes the config directory: namespaces, one file of pods and services per namespace, one file per policy. */
export function writeBenchConfig(dir: string): BenchConfig {
  mkdirSync(join(dir, 'workloads'), { recursive: true });
  mkdirSync(join(dir, 'policies'), { recursive: true });
  const nsDocs = [`apiVersion: v1\nkind: Namespace\nmetadata:\n  name: ${ROOT_NAMESPACE}\n`];
  for (let n = 0; n < NAMESPACES; n++) nsDocs.push(`apiVersion: v1\nkind: Namespace\nmetadata:\n  name: ${ns(n)}\n  labels:\n    nodemesh.io/dataplane-mode: ambient\n`);
  writeFileSync(join(dir, 'namespaces.yaml'), nsDocs.join('---\n'));
  for (let n = 0; n < NAMESPACES; n++) {
    const docs: string[] = [];
    for (let i = 0; i < PODS_PER_NAMESPACE; i++) {
      const g = n * PODS_PER_NAMESPACE + i;
      const k = i % SERVICES_PER_NAMESPACE;
      docs.push(`apiVersion: v1
kind: Pod
metadata:
  name: app-${k}-${String(i).padStart(2, '0')}
  namespace: ${ns(n)}
  labels: { app: svc-${k}, version: v${1 + (i % 2)} }
spec:
  nodeName: ${nodeName(g % NODES)}
  serviceAccountName: sa-${k}
  containers:
    - name: app
      command: [sleep, infinity]
      ports:
        - { name: http, containerPort: 8080 }
        - { name: grpc, containerPort: 9090 }
status:
  podIP: 10.244.${Math.floor(g / 250)}.${(g % 250) + 1}
`);
    }
    // ClusterIPs from 10.96.1.0 up: 10.96.0.1 is the API server's own Service (default/kubernetes) on a cluster.
    for (let k = 0; k < SERVICES_PER_NAMESPACE; k++) {
      docs.push(`apiVersion: v1
kind: Service
metadata: { name: svc-${k}, namespace: ${ns(n)} }
spec:
  clusterIP: 10.96.${n + 1}.${k + 1}
  selector: { app: svc-${k} }
  ports:
    - { name: http, port: 80, targetPort: http }
    - { name: grpc, port: 9090, targetPort: 9090 }
`);
    }
    writeFileSync(join(dir, 'workloads', `${ns(n)}.yaml`), docs.join('---\n'));
  }
  const counts = { total: 2, allow: 2, deny: 0, global: 0, namespace: 0, selector: 2 };
  for (let i = 0; i < POLICIES - 2; i++) {
    const p = policy(i);
    writeFileSync(join(dir, 'policies', `p${String(i).padStart(3, '0')}.yaml`), p.yaml);
    counts.total++;
    counts[p.action === 'ALLOW' ? 'allow' : 'deny']++;
    counts[p.scope === 'GLOBAL' ? 'global' : p.scope === 'NAMESPACE' ? 'namespace' : 'selector']++;
  }
  const probe = (name: string) => ({ name, key: `${ns(0)}/${name}`, file: join(dir, 'policies', `${name}.yaml`) });
  const config: BenchConfig = {
    probe: probe('probe'),
    renameProbe: probe('probe-rename'),
    pods: NAMESPACES * PODS_PER_NAMESPACE,
    services: NAMESPACES * SERVICES_PER_NAMESPACE,
    policies: counts,
  };
  for (const p of [config.probe, config.renameProbe]) writeFileSync(p.file, probePolicy(p.name, 0));
  return config;
}
