// How the benchmarks run as programs: main's result as the exit code, the mesh they brought up
// torn down on Ctrl-C or SIGTERM (and at the end), and their section of docs/benchmarks.md.
import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { down, packageRoot } from '../cluster/index.js';
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

/** Replaces the benchmark's own section of docs/benchmarks.md (every other byte kept); the file's path. */
export function writeBenchSection(name: string, section: string): string {
  const file = join(packageRoot, 'docs', 'benchmarks.md');
  writeFileSync(file, replaceSection(existsSync(file) ? readFileSync(file, 'utf8') : undefined, name, section));
  return file;
}
