// `make bench` (control plane): with 1,000 workloads and 100 AuthorizationPolicies, how long a
// policy edit takes to reach 1, 10 and 50 xDS clients, how many bytes a push costs against the
// initial sync, and how much memory the control plane and each client use; first with the config
// directory source, then the same objects through the stand-in kube-apiserver with the Kubernetes
// source (50 agents with ServiceAccount tokens). The control plane, every client and the stand-in
// run as processes of their own; writes a section of docs/benchmarks.md (`--help`).
// The pieces: cp-settings.ts (the command line), cp-config.ts (the mesh), cp-server.ts (the
// control-plane process, which is this file run with `--role control-plane`), cp-child.ts,
// cp-runner.ts (control plane, rounds, changes), cp-dir.ts and cp-kube.ts (the two sources),
// cp-report.ts and cp-report-kube.ts (the section).
import { existsSync, mkdirSync, readFileSync, realpathSync, writeFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { packageRoot } from '../cluster/index.js';
import { progress } from './cp-child.js';
import { writeBenchConfig } from './cp-config.js';
import { runDir } from './cp-dir.js';
import { runKube } from './cp-kube.js';
import { report, SECTION } from './cp-report.js';
import { Bench } from './cp-runner.js';
import { CP_ROLE, serveControlPlane, type CpReport } from './cp-server.js';
import { HELP, parseSettings } from './cp-settings.js';
import { replaceSection } from './sections.js';
import { nowMs } from './xds-agent.js';

async function main(argv: string[]): Promise<number> {
  const parsed = parseSettings(argv);
  if ('help' in parsed) {
    process.stdout.write(HELP);
    return 0;
  }
  if ('error' in parsed) {
    process.stderr.write(`bench: ${parsed.error}\n\n${HELP}`);
    return 2;
  }
  const s = parsed.settings;
  const t0 = nowMs();
  const bench = new Bench(s);
  const watchdog = setTimeout(() => {
    process.stderr.write(`bench failed: still running after ${s.deadlineMs / 1000} s (NODEMESH_BENCH_CP_DEADLINE_S); killing every child; logs in ${bench.root}\n`);
    bench.killAll();
    process.exit(1);
  }, s.deadlineMs);
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
    const kube = s.kubeAgents > 0 ? `; Kubernetes source: ${s.kubeAgents} agents` : '; Kubernetes source skipped';
    progress(`control-plane benchmark${s.quick ? ' (--quick)' : ''}: directory source ${s.clients.join(', ')} clients${kube}; ${s.changes} changes each`);
    mkdirSync(bench.configDir);
    bench.config = writeBenchConfig(bench.configDir);
    const mainRun = await runDir(bench, 'default', s.clients, undefined, { rename: s.rename });
    // The Kubernetes run next, so that it and the directory's largest round are as close in time as they can be.
    const kubeRun = s.kubeAgents > 0 ? await runKube(bench, s.kubeAgents) : undefined;
    const compare = s.compareDebounceMs !== undefined ? await runDir(bench, `debounce-${s.compareDebounceMs}`, [Math.max(...s.clients)], s.compareDebounceMs, { rename: false }) : undefined;
    const section = report(bench.config, s, mainRun, compare, kubeRun, (nowMs() - t0) / 1000, loadavg()[0]!);
    process.stdout.write(`\n${section}\n`);
    if (s.write) {
      const file = join(packageRoot, 'docs', 'benchmarks.md');
      writeFileSync(file, replaceSection(existsSync(file) ? readFileSync(file, 'utf8') : undefined, SECTION, section));
      process.stdout.write(`written to ${file}\n`);
    } else progress('docs/benchmarks.md not written (--quick, --no-kube or --no-write)');
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
  (role ? serveControlPlane(process.argv.slice(2)).then(() => 0) : main(process.argv.slice(2))).then(
    (c) => (process.exitCode = c),
    (e: unknown) => {
      process.stderr.write(`bench failed: ${(e as Error).stack ?? String(e)}\n`);
      if (role && process.send) process.send({ type: 'error', message: (e as Error).stack ?? String(e) } satisfies CpReport, () => process.exit(1));
      else process.exitCode = 1;
    },
  );
}
