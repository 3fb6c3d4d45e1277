// Brings up a real mesh for privileged end-to-end tests: the agent as its own process (the
// built CLI), pods from the node simulator, clients run inside pods with `sim exec`.
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ADMIN, startAgent, startAgentWithControlPlane, startControlPlane, stopAgent, stopControlPlane } from '../../src/cluster/up.js';
import { getJson } from '../../src/cluster/daemon.js';
import { Redirector } from '../../src/redirect/index.js';
import { pidAlive } from '../../src/pids.js';
import { uninstallChainedPlugin } from '../../src/cluster/cni.js';
import { listPods, simDown, simUp } from '../../src/sim/index.js';
import type { FlowRecord } from '../../src/telemetry/index.js';

export const repoRoot = fileURLToPath(new URL('../..', import.meta.url));
export const cli = join(repoRoot, 'bin', 'nodemesh');
export const fixtureBin = join(repoRoot, 'test', 'fixtures', 'bin');

export interface Mesh extends PodRunner {
  sd: string;
  pinRoot: string;
  ip(pod: string): string;
  flows(): Promise<FlowRecord[]>;
  dump(): Promise<{ pods: { namespace: string; name: string; ip: string }[] }>;
  /** Starts the agent again (after stopAgent), with `extra` flags after the usual ones. */
  startAgent(extra?: string[]): Promise<number>;
  stopAgent(): Promise<void>;
  startControlPlane(): Promise<number>;
  stopControlPlane(): Promise<void>;
  down(): Promise<void>;
}

/** Runs commands and the test client (test/fixtures/bin/nm_client.py) in the simulator's pods. */
export interface PodRunner {
  exec(pod: string, argv: string[], timeoutMs?: number): { code: number; stdout: string; stderr: string };
  client(pod: string, args: string[], timeoutMs?: number): Record<string, unknown>;
  clientAsync(pod: string, args: string[]): Promise<Record<string, unknown>>;
}

export function podRunner(sd: string): PodRunner {
  const exec: PodRunner['exec'] = (pod, argv, timeoutMs = 60_000) => {
    const r = spawnSync(cli, ['sim', 'exec', '--state-dir', sd, pod, '--', ...argv], { encoding: 'utf8', timeout: timeoutMs, maxBuffer: 64 << 20 });
    return { code: r.status ?? -1, stdout: r.stdout ?? '', stderr: r.stderr ?? '' };
  };
  return {
    exec,
    client: (pod, args, timeoutMs) => {
      const r = exec(pod, ['python3', join(fixtureBin, 'nm_client.py'), ...args], timeoutMs);
      const line = r.stdout.trim().split('\n').at(-1) ?? '';
      try {
        return JSON.parse(line) as Record<string, unknown>;
      } catch {
        throw new Error(`client in ${pod} printed no result (exit ${r.code}): ${r.stdout}${r.stderr}`);
      }
    },
    clientAsync: (pod, args) =>
      new Promise((resolve, reject) => {
        const child = spawn(cli, ['sim', 'exec', '--state-dir', sd, pod, '--', 'python3', join(fixtureBin, 'nm_client.py'), ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
        let out = '';
        child.stdout.on('data', (d: Buffer) => (out += d));
        child.on('error', reject);
        child.on('exit', () => {
          try {
            resolve(JSON.parse(out.trim().split('\n').at(-1) ?? '') as Record<string, unknown>);
          } catch {
            reject(new Error(`client in ${pod} printed no result: ${out}`));
          }
        });
      }),
  };
}

/** Writes a config directory of YAML documents into a fresh temp dir. */
/** Config dirs writeConfig made: a mesh brought up on one removes it on down. */
const written = new Set<string>();

export function writeConfig(docs: string): string {
  const dir = mkdtempSync(join(tmpdir(), 'nm-e2e-cfg-'));
  writeFileSync(join(dir, 'pods.yaml'), docs);
  written.add(dir);
  return dir;
}

/**
 * Local mode (agent reads the config dir) by default; with `controlPlane`, the control plane
 * runs as its own process on its default ports and the agent takes everything from it.
 */
export async function meshUp(configDir: string, opts: { controlPlane?: boolean; agentArgs?: string[] } = {}): Promise<Mesh> {
  const sd = mkdtempSync(join(tmpdir(), 'nm-e2e-state-'));
  const pinRoot = `/sys/fs/bpf/nodemesh-e2e-${process.pid}`;
  const agentArgs = ['--pin-root', pinRoot, '--connect-timeout', '3000', ...(opts.agentArgs ?? [])];
  const agent = (extra: string[] = []) => (opts.controlPlane ? startAgentWithControlPlane(sd, [...agentArgs, ...extra]) : startAgent(configDir, sd, [...agentArgs, ...extra]));
  const down = async (): Promise<void> => {
    await simDown({ stateDir: sd });
    await stopAgent(sd);
    await stopControlPlane(sd);
    uninstallChainedPlugin(sd);
    await Redirector.destroyAll(pinRoot);
    rmSync(sd, { recursive: true, force: true });
    if (written.delete(configDir)) rmSync(configDir, { recursive: true, force: true });
  };
  try {
    if (opts.controlPlane) await startControlPlane(configDir, sd);
    await agent();
    await simUp(configDir, { stateDir: sd });
  } catch (err) {
    // A half-started mesh must not outlive the failed suite: its daemons hold the node's ports.
    await down().catch(() => {});
    throw err;
  }
  const pods = await listPods({ stateDir: sd });
  const ips = new Map(pods.map((p) => [`${p.namespace}/${p.name}`, p.ip]));
  const run = podRunner(sd);
  return {
    sd,
    pinRoot,
    ip: (pod) => {
      const ip = ips.get(pod);
      if (!ip) throw new Error(`no pod ${pod}; have ${[...ips.keys()].join(', ')}`);
      return ip;
    },
    ...run,
    flows: () => getJson<FlowRecord[]>(`${ADMIN}/debug/flows`),
    dump: () => getJson(`${ADMIN}/config_dump`),
    startAgent: agent,
    startControlPlane: () => startControlPlane(configDir, sd),
    stopControlPlane: async () => {
      await stopControlPlane(sd);
    },
    stopAgent: async () => {
      await stopAgent(sd);
    },
    down,
  };
}

/** Everything a test run could leave behind on the host; empty when clean. */
export function leftovers(...pinRoots: string[]): string[] {
  const out: string[] = [];
  const ns = execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' }).split('\n').filter((l) => /^nm-/.test(l));
  if (ns.length) out.push(`netns: ${ns.join(', ')}`);
  for (const pinRoot of pinRoots) if (existsSync(pinRoot)) out.push(`bpffs: ${pinRoot}`);
  const links = execFileSync('ip', ['-o', 'link', 'show'], { encoding: 'utf8' }).split('\n').filter((l) => /nm-br/.test(l));
  if (links.length) out.push(`links: ${links.join('; ')}`);
  for (const root of ['/sys/fs/cgroup/unified', '/sys/fs/cgroup']) {
    if (existsSync(join(root, 'cgroup.controllers')) || existsSync(join(root, 'cgroup.procs'))) {
      const cg = readdirSync(root).filter((d) => d.startsWith('nodemesh-sim'));
      if (cg.length) out.push(`cgroups: ${cg.map((d) => join(root, d)).join(', ')}`);
    }
  }
  return out;
}

export function ipForward(): string {
  return readFileSync('/proc/sys/net/ipv4/ip_forward', 'utf8').trim();
}

/** Whether a process of this pid exists (signal 0). */
export function processAlive(pid: number | undefined): boolean {
  return pid !== undefined && pid > 0 && pidAlive(pid);
}
