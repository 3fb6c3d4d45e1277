// What every fuzz property (test/fuzz/) shares: the run count and seed from the environment, a
// hard time cap that fails rather than passes, progress lines for long runs, and a watch on the
// process so that an uncaught exception or unhandled rejection fails the case that caused it.
import { existsSync, readdirSync } from 'node:fs';
import fc from 'fast-check';

/** Default per target: small, so `make test` stays fast; `make fuzz` sets 100,000. */
export const DEFAULT_FUZZ_RUNS = 500;

function envInt(name: string): number | undefined {
  const v = process.env[name];
  if (v === undefined || v === '') return undefined;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) throw new Error(`${name}=${JSON.stringify(v)} must be a positive integer`);
  return n;
}

/** NODEMESH_FUZZ_RUNS: generated cases per target. */
export const FUZZ_RUNS = envInt('NODEMESH_FUZZ_RUNS') ?? DEFAULT_FUZZ_RUNS;

export interface FuzzBudget {
  /** Cases of this property (FUZZ_RUNS unless a property scales it). */
  runs: number;
  /** The time cap: the property fails, and stops, when it is reached. */
  capMs: number;
  /** For vitest's per-test timeout: the cap plus set-up and shrinking. */
  testTimeoutMs: number;
}

/**
 * The budget of one property: `msPerCase` is a generous bound on one case on a loaded 2-core
 * machine (the typical case is 5 to 20 times faster), so the cap only trips on a hang.
 */
export function fuzzBudget(msPerCase: number, runs = FUZZ_RUNS): FuzzBudget {
  const capMs = Math.max(60_000, Math.ceil(runs * msPerCase));
  return { runs, capMs, testTimeoutMs: capMs + 120_000 };
}

/**
 * fc.assert parameters. NODEMESH_FUZZ_SEED (and NODEMESH_FUZZ_PATH, both printed by a failure)
 * replay a failing run exactly. `examples` run first, every time: inputs that found a bug once.
 */
export function fuzzParams<T>(b: FuzzBudget, examples: T[] = []): fc.Parameters<T> {
  const seed = process.env.NODEMESH_FUZZ_SEED;
  const path = process.env.NODEMESH_FUZZ_PATH;
  return {
    numRuns: b.runs,
    ...(examples.length ? { examples } : {}),
    ...(seed !== undefined && seed !== '' ? { seed: Number(seed) } : {}),
    ...(path ? { path } : {}),
    plugins: [fc.interruptAfterTimeLimit(b.capMs, { failOnInterrupt: true })],
  };
}

/**
 * Counts cases and prints a line every tenth of a long run (10,000 cases or more) to stderr,
 * which vitest passes through. Returns the tick to call once per case.
 */
export function progress(target: string, runs: number): () => void {
  let n = 0;
  const every = runs >= 10_000 ? Math.ceil(runs / 10) : Infinity;
  const t0 = Date.now();
  return () => {
    n++;
    if (n % every === 0) process.stderr.write(`fuzz ${target}: ${n}/${runs} cases, ${Math.round((Date.now() - t0) / 1000)} s\n`);
  };
}

export interface ProcessWatch {
  /** Throws (failing the case) if anything escaped to the process since the last call. */
  check(): void;
  dispose(): void;
}

/**
 * Records uncaught exceptions and unhandled rejections. Vitest would report them too, but only
 * at the end and without the input; checking after each case makes fast-check shrink to it.
 */
export function watchProcess(): ProcessWatch {
  const escaped: unknown[] = [];
  const onError = (e: unknown) => escaped.push(e);
  process.on('uncaughtException', onError);
  process.on('unhandledRejection', onError);
  return {
    check() {
      if (escaped.length === 0) return;
      const e = escaped.splice(0);
      throw new Error(`${e.length} error(s) escaped to the process: ${e.map((x) => (x instanceof Error ? (x.stack ?? x.message) : String(x))).join('\n---\n')}`);
    },
    dispose() {
      process.off('uncaughtException', onError);
      process.off('unhandledRejection', onError);
    },
  };
}

/** Open file descriptors of this process (Linux), for leak checks; undefined elsewhere. */
export function openFds(): number | undefined {
  return existsSync('/proc/self/fd') ? readdirSync('/proc/self/fd').length : undefined;
}

/** Resolves when `pred` holds (polling every 20 ms), or false after `ms`. */
export async function settle(pred: () => boolean, ms = 5000): Promise<boolean> {
  const until = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > until) return false;
    await new Promise((r) => setTimeout(r, 20));
  }
  return true;
}
