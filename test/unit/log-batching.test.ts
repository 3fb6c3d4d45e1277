// The agent's log destination: a line after a quiet spell is written at the end of its turn, the
// lines of a burst together a few milliseconds later, and every line reaches the file whatever way the
// process ends (a normal exit, SIGTERM, process.exit() in the middle of a burst).
import { spawn } from 'node:child_process';
import { closeSync, existsSync, openSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { BatchedDestination } from '../../src/log.js';
import { testTempDir } from '../helpers/tmp.js';

const LOG_TS = pathToFileURL(join(import.meta.dirname, '..', '..', 'src', 'log.ts')).href;

const read = (file: string): string => (existsSync(file) ? readFileSync(file, 'utf8') : '');

/** Waits (through I/O turns, not timers, which the test may fake) until the file holds `text`. */
async function untilHolds(file: string, text: string): Promise<void> {
  for (let i = 0; i < 100_000 && !read(file).includes(text); i++) await new Promise((r) => setImmediate(r));
  expect(read(file)).toContain(text);
}

/** Runs `body` in a child Node with the root logger at info, its stderr into `file`; resolves on exit. */
function child(file: string, body: string, onStdout?: (s: string, kill: () => void) => void): Promise<number | null> {
  const err = openSync(file, 'a');
  const p = spawn(process.execPath, ['--input-type=module', '-e', `import { log } from ${JSON.stringify(LOG_TS)};\n${body}`], {
    stdio: ['ignore', 'pipe', err],
    env: { ...process.env, NODEMESH_LOG_LEVEL: 'info', VITEST: '' },
  });
  closeSync(err);
  if (onStdout) p.stdout!.on('data', (d: Buffer) => onStdout(d.toString(), () => p.kill('SIGTERM')));
  return new Promise((resolve) => p.once('exit', (code) => resolve(code)));
}

/** The `i` of every line, in file order. */
function seq(file: string): number[] {
  return read(file)
    .trim()
    .split('\n')
    .map((l) => (JSON.parse(l) as { i: number }).i);
}

const upTo = (n: number): number[] => Array.from({ length: n }, (_, i) => i);

afterEach(() => {
  vi.useRealTimers();
});

describe('BatchedDestination', () => {
  it('writes a line after a quiet spell in its own turn and holds the lines that follow until the batch time is up', async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    const file = join(testTempDir('nm-log-'), 'agent.log');
    let now = 1000;
    const d = new BatchedDestination(file, { batchMs: 10, clock: () => now });
    d.write('first\n');
    await untilHolds(file, 'first\n');
    now += 1;
    d.write('second\n');
    now += 2;
    d.write('third\n');
    // Never handed to the file yet: no write of them can be in flight.
    expect(read(file)).toBe('first\n');
    now += 7;
    vi.advanceTimersByTime(9);
    await untilHolds(file, 'third\n');
    expect(read(file)).toBe('first\nsecond\nthird\n');
    // Quiet again: the next line goes in its own turn.
    now += 50;
    d.write('fourth\n');
    await untilHolds(file, 'fourth\n');
  });

  it('writes what it holds when flushed', async () => {
    const file = join(testTempDir('nm-log-'), 'agent.log');
    const d = new BatchedDestination(file, { batchMs: 3_600_000 });
    d.write('a\n');
    await untilHolds(file, 'a\n');
    d.write('b\n');
    expect(read(file)).toBe('a\n');
    await new Promise<void>((resolve, reject) => d.flush((err) => (err ? reject(err) : resolve())));
    await untilHolds(file, 'b\n');
    expect(read(file)).toBe('a\nb\n');
  });

  it('loses no line of a burst when the process exits at once, with process.exit() or by itself', async () => {
    const dir = testTempDir('nm-log-');
    const exited = join(dir, 'exit.log');
    expect(await child(exited, 'for (let i = 0; i < 500; i++) log.info({ i }, "burst");\nprocess.exit(0);')).toBe(0);
    expect(seq(exited)).toEqual(upTo(500));
    const ended = join(dir, 'end.log');
    expect(await child(ended, 'for (let i = 0; i < 500; i++) log.info({ i }, "burst");\nsetTimeout(() => log.info({ i: 500 }, "last"), 2);')).toBe(0);
    expect(seq(ended)).toEqual(upTo(501));
  });

  it('loses no line when SIGTERM stops the process as the agent stops (the event loop runs dry)', async () => {
    const file = join(testTempDir('nm-log-'), 'agent.log');
    const body = `let n = 0;
const t = setInterval(() => { for (let k = 0; k < 7; k++) log.info({ i: n++ }, 'tick'); }, 1);
process.once('SIGTERM', () => { clearInterval(t); log.info({ i: n++ }, 'stopping'); });
setTimeout(() => process.stdout.write('ready\\n'), 50);`;
    const code = await child(file, body, (s, kill) => {
      if (s.includes('ready')) kill();
    });
    expect(code).toBe(0);
    const got = seq(file);
    expect(got.length).toBeGreaterThan(7);
    expect(got).toEqual(upTo(got.length));
    expect(read(file).trim().split('\n').at(-1)).toMatch(/"msg":"stopping"/);
  });
});
