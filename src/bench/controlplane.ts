// `make bench` (control plane): with 1,000 workloads and 100 AuthorizationPolicies, how long a
// policy edit takes to reach 1, 10 and 50 xDS clients, how many bytes a push costs against the
// initial sync, and how much memory the control plane and each client use. The control plane
// and every client run as processes of their own; writes a section of docs/benchmarks.md.
// The pieces: cp-config.ts (the mesh), cp-server.ts (the control-plane process, which is this
// file run with `--role control-plane`), cp-child.ts, cp-runner.ts (the scenarios), cp-report.ts.
import { existsSync, mkdirSync, readFileSync, realpathSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { packageRoot } from '../cluster/index.js';
import { progress } from './cp-child.js';
import { writeBenchConfig } from './cp-config.js';
import { report, SECTION } from './cp-report.js';
import { Bench, CHANGES, CLIENTS, COMPARE_DEBOUNCE, DEADLINE_MS } from './cp-runner.js';
import { CP_ROLE, serveControlPlane, type CpReport } from './cp-server.js';
import { replaceSection } from './sections.js';
import { nowMs } from './xds-agent.js';

async function main(): Promise<number> {
  const t0 = nowMs();
  const bench = new Bench();
  const watchdog = setTimeout(() => {
    process.stderr.write(`bench failed: still running after ${DEADLINE_MS / 1000} s (NODEMESH_BENCH_CP_DEADLINE_S); killing every child; logs in ${bench.root}\n`);
    bench.killAll();
    process.exit(1);
  }, DEADLINE_MS);
  watchdog.unref();
  const onSignal = (sig: NodeJS.Signals) => {
    bench.killAll();
    process.stderr.write(`received ${sig}; killed the children; logs in ${bench.root}\n`);
    process.exit(130);
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  let ok = false;
  try {
    progress(`control-plane benchmark: ${CLIENTS.join(', ')} clients, ${CHANGES} changes each (NODEMESH_BENCH_CP_CLIENTS, NODEMESH_BENCH_CP_CHANGES)`);
    mkdirSync(bench.configDir);
    bench.config = writeBenchConfig(bench.configDir);
    const mainRun = await bench.run('default', CLIENTS, undefined, { rename: true });
    const compare = COMPARE_DEBOUNCE ? await bench.run(`debounce-${COMPARE_DEBOUNCE}`, [Math.max(...CLIENTS)], Number(COMPARE_DEBOUNCE), { rename: false }) : undefined;
    const section = report(bench.config, mainRun, compare, (nowMs() - t0) / 1000);
    const file = join(packageRoot, 'docs', 'benchmarks.md');
    writeFileSync(file, replaceSection(existsSync(file) ? readFileSync(file, 'utf8') : undefined, SECTION, section));
    process.stdout.write(`\n${section}\nwritten to ${file}\n`);
    ok = true;
    return 0;
  } finally {
    await bench.cleanup(!ok);
    if (!ok) process.stderr.write(`logs kept in ${bench.root}\n`);
    clearTimeout(watchdog);
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}

const entry = process.argv[1] ? realpathSync(process.argv[1]) : '';
if (entry === realpathSync(fileURLToPath(import.meta.url))) {
  const role = process.argv.includes(CP_ROLE) && process.argv.includes('--role');
  (role ? serveControlPlane(process.argv.slice(2)).then(() => 0) : main()).then(
    (c) => (process.exitCode = c),
    (e: unknown) => {
      process.stderr.write(`bench failed: ${(e as Error).stack ?? String(e)}\n`);
      if (role && process.send) process.send({ type: 'error', message: (e as Error).stack ?? String(e) } satisfies CpReport, () => process.exit(1));
      else process.exitCode = 1;
    },
  );
}
