// The demo's capture act: `nodemesh capture` runs as its own process while the policy act
// drives traffic, and the demo prints what it showed (verdicts, policies, pods outside the mesh).
import { spawn } from 'node:child_process';
import { cliPath } from '../cluster/index.js';

export interface CaptureRun {
  /** Stops the capture (SIGINT, as Ctrl-C) and returns its table, header first. */
  stop(): Promise<string[]>;
}

/** Starts `nodemesh capture` (the live table) on the host node's agent; resolves once it streams. */
export async function startCapture(sd: string, filter: string[] = []): Promise<CaptureRun> {
  const child = spawn(cliPath, ['capture', '--state-dir', sd, ...filter], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout.on('data', (d: Buffer) => (out += d));
  child.stderr.on('data', (d: Buffer) => (err += d));
  const exited = new Promise<void>((r) => child.once('close', () => r()));
  const t0 = Date.now();
  while (!err.includes('capturing on node')) {
    if (child.exitCode !== null || Date.now() - t0 > 10_000) {
      child.kill('SIGKILL');
      throw new Error(`nodemesh capture did not start: ${err.trim() || out.trim()}`);
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  return {
    async stop() {
      await new Promise((r) => setTimeout(r, 300)); // the last records are published at close
      child.kill('SIGINT');
      const late = setTimeout(() => child.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(late);
      return out.split('\n').filter((l) => l.trim() !== '');
    },
  };
}

/** Prints the capture's table: the header and up to `max` rows. */
export function printCapture(lines: string[], max = 12): void {
  process.stdout.write('\nWhat `nodemesh capture` showed meanwhile (run as its own process, streaming from the agent):\n');
  for (const l of lines.slice(0, max + 1)) process.stdout.write(`  ${l}\n`);
  if (lines.length > max + 1) process.stdout.write(`  … ${lines.length - max - 1} more\n`);
}
