// Test helpers for the control plane and xDS suites: a real control plane (real gRPC, real TLS,
// real CA) on 127.0.0.1 port 0, over a temp config directory that tests edit. Nothing is faked.
import { mkdirSync, mkdtempSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ControlPlane, type ControlPlaneOptions } from '../../src/controlplane/controlplane.js';
import type { ControlPlaneConnection } from '../../src/xds/index.js';

export interface TestControlPlane {
  /** The running control plane (a new one after `restart`). */
  cp: ControlPlane;
  configDir: string;
  stateDir: string;
  /**
   * Connection settings for an agent on `node`: by default with `node`'s own token, whose pod
   * CIDR is 10.0.0.0/8 (every pod IP these suites use).
   */
  conn(node: string, token?: string): ControlPlaneConnection;
  write(file: string, text: string): void;
  remove(file: string): void;
  /** Stops the control plane and starts a new one on the same config and state dirs. */
  restart(): Promise<void>;
  close(): Promise<void>;
}

/** The pod CIDR of the tokens `conn` mints by default. */
export const TEST_POD_CIDR = '10.0.0.0/8';

export async function startTestControlPlane(files: Record<string, string>, opts: Partial<ControlPlaneOptions> = {}): Promise<TestControlPlane> {
  const root = mkdtempSync(join(tmpdir(), 'nodemesh-cp-'));
  const configDir = join(root, 'config');
  const stateDir = join(root, 'state');
  const write = (file: string, text: string) => writeFileSync(join(configDir, file), text);
  mkdirSync(configDir);
  for (const [f, t] of Object.entries(files)) write(f, t);
  const start = () => ControlPlane.start({ configDir, stateDir, listen: '127.0.0.1:0', admin: '127.0.0.1:0', debounceMs: 50, rescanMs: 500, ...opts });
  let cp = await start();
  return {
    get cp() {
      return cp;
    },
    configDir,
    stateDir,
    conn: (node, token) => ({ address: cp.address, rootCertPem: cp.ca.rootCertPem, token: token ?? cp.nodeToken(node, [TEST_POD_CIDR]), nodeName: node }),
    write,
    remove: (file) => unlinkSync(join(configDir, file)),
    restart: async () => {
      await cp.stop();
      cp = await start();
    },
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
