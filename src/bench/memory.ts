// `make bench` (memory): the node agent's resident memory as `nodemesh up` runs it (control
// plane mode, one node), idle with no pods and with 1, 10 and 50 enrolled `sleep infinity`
// pods, and the growth per enrolled pod. Peak under load is measured by mesh.ts.
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ADMIN, getJson, progress, up } from '../cluster/index.js';
import { agentPaths } from '../net/index.js';
import { simUp } from '../sim/index.js';
import { MeshTeardown, runMain, writeBenchSection } from './run.js';
import { COUNTS, memoryConfig, NS, readMemory, report, type Reading } from './memory-report.js';
import { BENCH_OPTIONS_HELP, parseBenchArgs, isRoot } from './tools.js';

const HELP = `Usage: node dist/bench/memory.js [--quick] [--runs N] [--seconds S]

The node agent's memory: brings up the control plane and one agent as \`nodemesh up\` does (one
ambient namespace, no pods), reads the agent's RSS (VmRSS, and its anonymous and file-backed
parts from /proc/<pid>/status) idle, then with 1, 10 and 50 enrolled \`sleep infinity\` pods,
and the growth per pod from 0 to 50. Each reading is taken after S seconds of quiet. A fresh
mesh per run; medians over the runs; writes the memory section of docs/benchmarks.md. Needs root.

${BENCH_OPTIONS_HELP}`;
const ARGS = parseBenchArgs(HELP);
const SECTION = 'memory';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function enrolled(): Promise<number> {
  const d = await getJson<{ pods: { namespace: string }[] }>(`${ADMIN}/config_dump`);
  return d.pods.filter((p) => p.namespace === NS).length;
}

/** One fresh mesh: a reading per pod count. */
async function runOnce(run: number, runs: number, settleMs: number): Promise<Map<number, Reading>> {
  const sd = mkdtempSync(join(tmpdir(), 'nm-bench-memory-'));
  const dir = mkdtempSync(join(tmpdir(), 'nm-bench-memory-cfg-'));
  const file = join(dir, 'pods.yaml');
  writeFileSync(file, memoryConfig(0));
  const teardown = new MeshTeardown('bench', sd, [dir]);
  const out = new Map<number, Reading>();
  try {
    await up(dir, sd);
    const pid = Number(readFileSync(agentPaths(sd).pidFile, 'utf8').trim());
    for (const n of COUNTS) {
      if (n > 0) {
        writeFileSync(file, memoryConfig(n));
        // The control plane picks the new pods up from the directory (watch, 2 s rescan)
        // before their CNI ADD asks for them; the agent waits for them 10 s anyway.
        await sleep(2500);
        await simUp(dir, { stateDir: sd });
        const deadline = Date.now() + 60_000;
        while ((await enrolled()) < n) {
          if (Date.now() > deadline) throw new Error(`only ${await enrolled()} of ${n} pods enrolled after 60 s`);
          await sleep(250);
        }
      }
      await sleep(settleMs);
      const r = readMemory(pid);
      out.set(n, r);
      progress(`run ${run}/${runs}: ${n} pods: agent RSS ${r.rss.toFixed(1)} MB (anon ${r.anon.toFixed(1)}, file ${r.file.toFixed(1)})`);
    }
    return out;
  } finally {
    await teardown.finish();
  }
}

async function main(): Promise<number> {
  if (!ARGS) return 0;
  if (!isRoot()) return 1;
  const t0 = Date.now();
  progress(`memory benchmark: agent idle and with ${COUNTS.slice(1).join(', ')} pods × ${ARGS.runs} runs, readings after ${ARGS.seconds} s`);
  const runs: Map<number, Reading>[] = [];
  for (let i = 1; i <= ARGS.runs; i++) runs.push(await runOnce(i, ARGS.runs, ARGS.seconds * 1000));
  const section = report(runs, (Date.now() - t0) / 1000);
  if (ARGS.quick) {
    process.stdout.write(`\n${section}\n(--quick: docs/benchmarks.md not written)\n`);
    return 0;
  }
  process.stdout.write(`\n${section}\nwritten to ${writeBenchSection(SECTION, section)}\n`);
  return 0;
}

runMain('memory benchmark', main);
