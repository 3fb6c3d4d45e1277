// The privileged suites' shared cast, as config YAML: the ambient namespace `shop` with a
// backend (test server on 8080 and 9090), a frontend (its own ServiceAccount), a batch client
// and a web server; `legacy`, a namespace outside the mesh with a client; and the policy that
// denies the frontend's identity on the backend. Suites compose the pieces they need.
import { join } from 'node:path';
import { fixtureBin } from './mesh.js';

const server = join(fixtureBin, 'nm_server.py');

/** Joins YAML documents into one file's text. */
export const yamlDocs = (...docs: string[]): string => `\n${docs.join('---\n')}`;

export const SHOP_NAMESPACE = `apiVersion: v1
kind: Namespace
metadata: { name: shop, labels: { nodemesh.io/dataplane-mode: ambient } }
`;

export const FRONTEND_SERVICE_ACCOUNT = `apiVersion: v1
kind: ServiceAccount
metadata: { name: frontend, namespace: shop }
`;

/** A pod running the test server (test/fixtures/bin/nm_server.py) on `ports` ("8080,9090"). */
export const serverPod = (ns: string, name: string, ports: string, o: { app?: boolean; serviceAccount?: string } = {}): string => `apiVersion: v1
kind: Pod
metadata: { name: ${name}, namespace: ${ns}${o.app ? `, labels: { app: ${name} }` : ''} }
spec:
${o.serviceAccount ? `  serviceAccountName: ${o.serviceAccount}\n` : ''}  containers:
  - { name: s, command: [python3, ${server}, "${ports}"], ports: [{ containerPort: ${ports.split(',')[0]} }] }
`;

/** A pod that only sleeps: a client for commands run in it. */
export const sleeperPod = (ns: string, name: string, o: { app?: boolean; serviceAccount?: string } = {}): string => `apiVersion: v1
kind: Pod
metadata: { name: ${name}, namespace: ${ns}${o.app ? `, labels: { app: ${name} }` : ''} }
spec:
${o.serviceAccount ? `  serviceAccountName: ${o.serviceAccount}\n` : ''}  containers:
  - { name: c, command: [sleep, infinity] }
`;

export const BACKEND = serverPod('shop', 'backend', '8080,9090', { app: true, serviceAccount: 'backend' });
export const WEB = serverPod('shop', 'web', '8080', { app: true, serviceAccount: 'web' });
export const FRONTEND = sleeperPod('shop', 'frontend', { app: true, serviceAccount: 'frontend' });
export const BATCH = sleeperPod('shop', 'batch', { app: true });

export const LEGACY_NAMESPACE = `apiVersion: v1
kind: Namespace
metadata: { name: legacy }
`;
export const LEGACY_CLIENT = sleeperPod('legacy', 'client');

export const DENY_FRONTEND = `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: deny-frontend, namespace: shop }
spec:
  selector: { matchLabels: { app: backend } }
  action: DENY
  rules:
  - from: [{ source: { principals: ["cluster.local/ns/shop/sa/frontend"] } }]
`;
