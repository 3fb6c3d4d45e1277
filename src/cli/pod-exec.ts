// Runs a command in a simulated pod through the CLI (`nodemesh sim exec`), as a user would,
// and captures what it printed: what the demos drive their real clients with.
import { spawnSync } from 'node:child_process';
import { cliPath } from '../cluster/index.js';

export function simExec(pod: string, argv: string[], sd: string): { code: number; out: string } {
  const r = spawnSync(cliPath, ['sim', 'exec', '--state-dir', sd, pod, '--', ...argv], { encoding: 'utf8', timeout: 30_000 });
  return { code: r.status ?? 1, out: `${r.stdout ?? ''}${r.stderr ?? ''}`.trim() };
}
