// How the benchmarks run as programs: main's result as the exit code, the mesh they brought up
// torn down on Ctrl-C or SIGTERM (and at the end), and their section of docs/benchmarks.md
// (with its figures kept in docs/benchmarks.json and the ratio chart redrawn).
import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { down, packageRoot } from '../cluster/index.js';
import { withChartLink, writeChart } from './chart.js';
import { ResultsFileError, writeResults, type SectionResults } from './results.js';
import { replaceSection } from './sections.js';

/** Runs `main`; its result is the exit code, a throw prints `<what> failed:` and exits 1. */
export function runMain(what: string, main: () => Promise<number>): void {
  main().then(
    (c) => (process.exitCode = c),
    (e: unknown) => {
      process.stderr.write(`${what} failed: ${(e as Error).stack ?? String(e)}\n`);
      process.exitCode = 1;
    },
  );
}

/**
 * Removes a benchmark's mesh (state dir `sd`) and its temporary dirs exactly once: on the first
 * SIGINT/SIGTERM (then exits 130), or at `finish()`. `before` runs first (e.g. kill a consumer).
 */
export class MeshTeardown {
  #stopping = false;
  readonly #onSignal: (sig: NodeJS.Signals) => void;

  constructor(readonly what: string, readonly sd: string, readonly dirs: string[], readonly before: () => void = () => {}) {
    this.#onSignal = (sig) => {
      if (this.#stopping) return;
      this.#stopping = true;
      process.stderr.write(`\n${what}: ${sig}; tearing down\n`);
      void this.#remove().finally(() => process.exit(130));
    };
    process.once('SIGINT', this.#onSignal);
    process.once('SIGTERM', this.#onSignal);
  }

  /** Whether the teardown has begun (a signal, or finish()): a benchmark's loop stops at its next check. */
  get stopping(): boolean {
    return this.#stopping;
  }

  async finish(): Promise<void> {
    process.off('SIGINT', this.#onSignal);
    process.off('SIGTERM', this.#onSignal);
    if (this.#stopping) return;
    this.#stopping = true;
    await this.#remove();
  }

  async #remove(): Promise<void> {
    try {
      this.before();
    } finally {
      await down(this.sd);
      for (const d of [...this.dirs, this.sd]) rmSync(d, { recursive: true, force: true });
    }
  }
}

/**
 * Replaces the benchmark's own section of docs/benchmarks.md (every other byte kept); the file's
 * path. With `results`, also merges them into docs/benchmarks.json and redraws the ratio chart.
 */
export function writeBenchSection(name: string, section: string, results?: SectionResults, docsDir = join(packageRoot, 'docs')): string {
  const file = join(docsDir, 'benchmarks.md');
  let md = replaceSection(existsSync(file) ? readFileSync(file, 'utf8') : undefined, name, section);
  if (results && keepResults(docsDir, { ...results, section: name })) md = withChartLink(md);
  writeFileSync(file, md);
  return file;
}

/**
 * docs/benchmarks.json and the chart; whether the chart was drawn. Never throws: a run's end
 * must not be lost to its JSON, so a problem is logged and the markdown is written regardless.
 */
function keepResults(docsDir: string, results: SectionResults): boolean {
  const json = join(docsDir, 'benchmarks.json');
  try {
    writeChart(writeResults(json, results), docsDir);
    return true;
  } catch (err) {
    if (err instanceof ResultsFileError && err.file === json) {
      const aside = `${json}.new`;
      let kept = '';
      try {
        writeResults(aside, results, { replaceBroken: true });
        kept = `; this run's results are in ${aside}: fix ${json} and rerun, or replace it (\`mv ${aside} ${json}\`, then \`node dist/bench/chart.js\`)`;
      } catch (e) {
        kept = `; this run's results could not be kept either (${(e as Error).message})`;
      }
      process.stderr.write(`bench: ${err.message}; left as it is${kept}\n`);
    } else process.stderr.write(`bench: results not kept in ${json}: ${(err as Error).stack ?? String(err)}\n`);
    return false;
  }
}
