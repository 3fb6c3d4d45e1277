// Helpers for the simulator's tests: the plugin binary, temp dirs, running the CLI, running a
// plugin binary, and a snapshot of everything the simulator may leave on the host.
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const REPO = resolve(fileURLToPath(new URL('../..', import.meta.url)));
export const CLI = join(REPO, 'bin', 'nodemesh');

/** native/build/nodemesh-cni, refusing a missing or stale build (run `make cni`). */
export function cniPluginBinary(): string {
  const bin = join(REPO, 'native', 'build', 'nodemesh-cni');
  if (!existsSync(bin)) throw new Error(`${bin} is missing: run \`make cni\` first`);
  const srcDir = join(REPO, 'native', 'cni');
  const newest = Math.max(...readdirSync(srcDir).map((f) => statSync(join(srcDir, f)).mtimeMs));
  if (statSync(bin).mtimeMs < newest) throw new Error(`${bin} is older than native/cni/: run \`make cni\` first`);
  return bin;
}

export function tempDir(prefix: string): string {
  return mkdtempSync(join(tmpdir(), prefix));
}

/** Writes `files` (name → text) into a fresh temp dir and returns it. */
export function configDir(files: Record<string, string>): string {
  const dir = tempDir('nm-sim-config-');
  for (const [name, text] of Object.entries(files)) writeFileSync(join(dir, name), text);
  return dir;
}

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs a program with env and stdin, collecting output (asynchronously, so an in-process fake can answer). */
export function runProgram(cmd: string, args: string[], opts: { env?: NodeJS.ProcessEnv; stdin?: string; timeoutMs?: number } = {}): Promise<RunResult> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(cmd, args, { env: opts.env ?? process.env, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 60_000);
    child.stdout.on('data', (b: Buffer) => (stdout += b.toString()));
    child.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
    child.stdin.on('error', () => undefined);
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolvePromise({ code: code ?? (signal ? 128 : -1), stdout, stderr });
    });
    child.stdin.end(opts.stdin ?? '');
  });
}

/** `bin/nodemesh <args>` (needs `make ts`). */
export function runCli(args: string[], env: NodeJS.ProcessEnv = process.env): Promise<RunResult> {
  return runProgram(CLI, args, { env });
}

/** Everything of the simulator's kind on the host; equal before and after a clean run. */
export interface HostSnapshot {
  netns: string[];
  links: string[];
  cgroups: string[];
  ipForward: string;
  varLibCni: boolean;
}

function simCgroups(root: string): string[] {
  const out: string[] = [];
  const walk = (d: string): void => {
    if (!existsSync(d)) return;
    out.push(d);
    for (const e of readdirSync(d, { withFileTypes: true })) if (e.isDirectory()) walk(join(d, e.name));
  };
  walk(join(root, 'nodemesh-sim'));
  return out;
}

export function hostSnapshot(cgroupRoot: string): HostSnapshot {
  return {
    netns: existsSync('/run/netns') ? readdirSync('/run/netns').filter((n) => n.startsWith('nm-')).sort() : [],
    // The bridge and its ports (the veth host ends the bridge plugin made).
    links: [
      ...readdirSync('/sys/class/net').filter((l) => l.startsWith('nm-')),
      ...(existsSync('/sys/class/net/nm-br0/brif') ? readdirSync('/sys/class/net/nm-br0/brif') : []),
    ].sort(),
    cgroups: simCgroups(cgroupRoot),
    ipForward: readFileSync('/proc/sys/net/ipv4/ip_forward', 'utf8').trim(),
    varLibCni: existsSync('/var/lib/cni'),
  };
}

/** Files left under a dir (e.g. host-local's dataDir). */
export function filesUnder(dir: string): string[] {
  if (!existsSync(dir)) return [];
  const out: string[] = [];
  const walk = (d: string): void => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      if (e.isDirectory()) walk(p);
      else out.push(p);
    }
  };
  walk(dir);
  return out;
}
