// Test helpers for the control plane and xDS suites: a real control plane (real gRPC, real TLS,
// real CA) on 127.0.0.1 port 0, over a temp config directory that tests edit. Nothing is faked.
import { mkdirSync, mkdtempSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ControlPlane, type ControlPlaneOptions } from '../../src/controlplane/controlplane.js';
import type { ControlPlaneConnection } from '../../src/xds/index.js';

export interface TestControlPlane {
  cp: ControlPlane;
  configDir: string;
  stateDir: string;
  /** Connection settings for an agent on `node`. */
  conn(node: string, token?: string): ControlPlaneConnection;
  write(file: string, text: string): void;
  remove(file: string): void;
  close(): Promise<void>;
}

export async function startTestControlPlane(files: Record<string, string>, opts: Partial<ControlPlaneOptions> = {}): Promise<TestControlPlane> {
  const root = mkdtempSync(join(tmpdir(), 'nodemesh-cp-'));
  const configDir = join(root, 'config');
  const stateDir = join(root, 'state');
  const write = (file: string, text: string) => writeFileSync(join(configDir, file), text);
  mkdirSync(configDir);
  for (const [f, t] of Object.entries(files)) write(f, t);
  const cp = await ControlPlane.start({ configDir, stateDir, listen: '127.0.0.1:0', admin: '127.0.0.1:0', debounceMs: 50, rescanMs: 500, ...opts });
  return {
    cp,
    configDir,
    stateDir,
    conn: (node, token) => ({ address: cp.address, rootCertPem: cp.ca.rootCertPem, token: token ?? cp.token, nodeName: node }),
    write,
    remove: (file) => unlinkSync(join(configDir, file)),
    close: async () => {
      await cp.stop();
      rmSync(root, { recursive: true, force: true });
    },
  };
}

/** Resolves when `pred` holds, polling every 10 ms; rejects after `ms` with `what`. */
export async function waitFor(pred: () => boolean, what: string, ms = 5000): Promise<void> {
  const until = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

export const NS_FOO = `apiVersion: v1
kind: Namespace
metadata:
  name: foo
  labels:
    nodemesh.io/dataplane-mode: ambient
`;

export function pod(name: string, opts: { ns?: string; ip?: string; node?: string; sa?: string; labels?: Record<string, string> } = {}): string {
  const labels = opts.labels ?? { app: name };
  return `apiVersion: v1
kind: Pod
metadata:
  name: ${name}
  namespace: ${opts.ns ?? 'foo'}
  labels:
${Object.entries(labels).map(([k, v]) => `    ${k}: ${v}`).join('\n')}
spec:
${opts.node ? `  nodeName: ${opts.node}\n` : ''}  serviceAccountName: ${opts.sa ?? name}
  containers:
    - name: main
      command: [sleep, infinity]
      ports:
        - name: http
          containerPort: 8080
${opts.ip ? `status:\n  podIP: ${opts.ip}\n` : ''}`;
}

export function service(name: string, opts: { ns?: string; ip?: string; selector?: Record<string, string> } = {}): string {
  const sel = opts.selector ?? { app: name };
  return `apiVersion: v1
kind: Service
metadata:
  name: ${name}
  namespace: ${opts.ns ?? 'foo'}
spec:
  clusterIP: ${opts.ip ?? '10.96.0.10'}
  selector:
${Object.entries(sel).map(([k, v]) => `    ${k}: ${v}`).join('\n')}
  ports:
    - name: http
      port: 80
      targetPort: http
`;
}
