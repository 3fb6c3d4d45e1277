// The root pino logger. Components take a child: `log.child({ component: 'outbound' })`.
import { pino, type DestinationStream, type Logger } from 'pino';

export type { Logger };

type SonicBoom = ReturnType<typeof pino.destination>;

function level(): string {
  return process.env.NODEMESH_LOG_LEVEL ?? (process.env.VITEST ? 'silent' : 'info');
}

/** How long lines that come in a burst wait to be written together. */
export const LOG_BATCH_MS = 10;

/**
 * pino's asynchronous destination, written in batches. A line after a quiet spell is written at
 * the end of the event-loop turn (with whatever else that turn logs); lines that follow within
 * LOG_BATCH_MS are gathered and written together when that time is up. A busy proxy logs a line
 * per connection (its access log), and a write of its own for each cost more than formatting the
 * line: batched, the agent makes at most 1000 / LOG_BATCH_MS writes a second. The pending write
 * holds the process open, so a process that ends by running out of work (the agent after
 * SIGTERM) writes everything; on process.exit() the exit handler writes what is left synchronously.
 */
export class BatchedDestination implements DestinationStream {
  /** A file descriptor, or a file path (appended to, directories made). */
  readonly #target: number | string;
  readonly #dest: SonicBoom;
  readonly #ms: number;
  readonly #clock: () => number;
  #pending = '';
  /** The write of `#pending` to come: at the end of this turn, or when the batch time is up. */
  #turn: NodeJS.Immediate | undefined;
  #timer: NodeJS.Timeout | undefined;
  /** When the last batch went to the destination (by the clock). */
  #wroteAt = -Infinity;

  /** `clock`: milliseconds, monotonic (default performance.now); for tests. */
  constructor(target: number | string, o: { batchMs?: number; clock?: () => number } = {}) {
    this.#target = target;
    this.#dest = pino.destination({ ...where(target), sync: false });
    this.#ms = o.batchMs ?? LOG_BATCH_MS;
    this.#clock = o.clock ?? (() => performance.now());
    open.add(this);
  }

  write(line: string): void {
    this.#pending += line;
    if (this.#turn !== undefined || this.#timer !== undefined) return;
    const since = this.#clock() - this.#wroteAt;
    if (since >= this.#ms) this.#turn = setImmediate(() => this.#release());
    else this.#timer = setTimeout(() => this.#release(), this.#ms - since);
  }

  /** Takes what is pending, cancelling its scheduled write. */
  #take(): string {
    clearImmediate(this.#turn);
    clearTimeout(this.#timer);
    this.#turn = undefined;
    this.#timer = undefined;
    const lines = this.#pending;
    this.#pending = '';
    return lines;
  }

  #release(): void {
    const lines = this.#take();
    this.#wroteAt = this.#clock();
    if (lines) this.#dest.write(lines);
  }

  /** Hands the batch to the destination now; `cb` as the destination's flush calls it (pino's logger.flush). */
  flush(cb?: (err?: Error) => void): void {
    this.#release();
    this.#dest.flush(cb);
  }

  /**
   * Writes everything synchronously, for an exit that did not wait for the batch (process.exit()).
   * Lines handed to the asynchronous destination now would start a write the exit never finishes;
   * a synchronous destination on the same target writes them before the process is gone.
   */
  flushSync(): void {
    const lines = this.#take();
    try {
      this.#dest.flushSync();
    } finally {
      if (lines) pino.destination({ ...where(this.#target), sync: true }).write(lines);
    }
  }
}

function where(target: number | string): { fd: number } | { dest: string; mkdir: true } {
  return typeof target === 'number' ? { fd: target } : { dest: target, mkdir: true };
}

/** Destinations whose batches the exit handler writes out (pino registers its SonicBooms itself). */
const open = new Set<BatchedDestination>();
process.once('exit', () => {
  for (const d of open) {
    try {
      d.flushSync();
    } catch {
      /* the destination is gone or not open yet: nothing more can be written */
    }
  }
});

const options = (lvl: string) => ({ level: lvl, base: { pid: process.pid }, serializers: { err: pino.stdSerializers.err } });

/** Logs JSON lines to stderr, so stdout stays free for command output. */
export const log: Logger = pino(options(level()), new BatchedDestination(2));

export function createLogger(dest: number | string, lvl = level()): Logger {
  return pino(options(lvl), new BatchedDestination(dest));
}
