// `nodemesh up --kubeconfig` against the stand-in API server that runs in the test process
// (test/helpers/kube-apiserver.ts): the CLI spawned asynchronously (a synchronous spawn would
// stop this process, and the API server with it, for as long as the command runs; clients in
// pods go through mesh.ts's clientAsync for the same reason), and what the suites read back: pods as the API has them, TokenReviews of
// the tokens the kubelet role wrote, the logs of the kubelet and control plane.
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { request } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { controlPlaneDir } from '../../src/cluster/daemon.js';
import { kubePaths } from '../../src/cluster/kube-record.js';
import type { KubeObject, KubeStandIn } from './kube-apiserver.js';
import { cli } from './mesh.js';

export interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs the nodemesh CLI without blocking this process; resolves when it exits (or is killed at `timeoutMs`). */
export function runCli(args: string[], timeoutMs = 180_000): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(cli, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d));
    child.stderr.on('data', (d: Buffer) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code: code ?? (signal ? 128 : -1), stdout, stderr });
    });
  });
}

/** `nodemesh up --kubeconfig` of the stand-in on `dir`, in a fresh state dir; throws with its output when it fails. */
export async function kubeUp(api: KubeStandIn, dir: string): Promise<{ sd: string; out: Run }> {
  const sd = mkdtempSync(join(tmpdir(), 'nm-e2e-kube-'));
  const out = await runCli(['up', '--state-dir', sd, '--kubeconfig', api.kubeconfigPath, dir]);
  if (out.code !== 0) throw Object.assign(new Error(`nodemesh up --kubeconfig exited ${out.code}:\n${out.stderr}\n${out.stdout}\n${logs(sd)}`), { sd });
  return { sd, out };
}

/** The kubelet's and control plane's logs, for failure messages. */
export function logs(sd: string): string {
  const read = (f: string): string => {
    try {
      return readFileSync(f, 'utf8').split('\n').slice(-40).join('\n');
    } catch {
      return '(none)';
    }
  };
  return `--- kubelet log\n${read(kubePaths(sd).kubeletLog)}\n--- control-plane log\n${read(join(controlPlaneDir(sd), 'control-plane.log'))}`;
}

/** Runs a shell snippet in a pod with `stdin`, asynchronously; its trimmed stdout. */
export function shIn(sd: string, pod: string, script: string, stdin = ''): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(cli, ['sim', 'exec', '--state-dir', sd, pod, '--', 'sh', '-c', script], { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d));
    child.on('error', reject);
    child.on('close', () => resolve(out.trim()));
    child.stdin.end(stdin);
  });
}

/** A denied connection: the proxy resets it (ENOTCONN when the reset beats the first send). */
export function refused(r: Record<string, unknown>): boolean {
  return r.outcome === 'reset' || r.outcome === 'error:107:Transport endpoint is not connected';
}

/** A TokenReview of `token` (for `audiences`, default the API's own), as the control plane sends one. */
export function reviewToken(api: KubeStandIn, token: string, audiences?: string[]): Promise<{ authenticated?: boolean; user?: { username?: string; extra?: Record<string, string[]> }; error?: string }> {
  const body = JSON.stringify({ apiVersion: 'authentication.k8s.io/v1', kind: 'TokenReview', spec: { token, ...(audiences ? { audiences } : {}) } });
  return new Promise((resolve, reject) => {
    const req = request(`${api.url}/apis/authentication.k8s.io/v1/tokenreviews`, { method: 'POST', ca: api.caPem, headers: { authorization: `Bearer ${api.token}`, 'content-type': 'application/json' } }, (res) => {
      let text = '';
      res.on('data', (d: Buffer) => (text += d));
      res.on('end', () => resolve((JSON.parse(text) as { status: never }).status));
    });
    req.on('error', reject);
    req.end(body);
  });
}

/** The Ready condition of a pod as the API has it ('True', 'False', or undefined when absent). */
export function readyOf(p: KubeObject | undefined): string | undefined {
  const conds = (p?.status as { conditions?: { type: string; status: string }[] } | undefined)?.conditions ?? [];
  return conds.find((c) => c.type === 'Ready')?.status;
}

/** Polls `check` until it returns a value other than undefined, or throws naming `what` after `ms`. */
export async function eventually<T>(what: string, check: () => Promise<T | undefined> | T | undefined, ms = 20_000): Promise<T> {
  const until = Date.now() + ms;
  for (;;) {
    const v = await check();
    if (v !== undefined) return v;
    if (Date.now() > until) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}
