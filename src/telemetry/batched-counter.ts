// A prom-client Counter that gathers increments by label-set identity and adds them when read:
// prom-client hashes all 23 labels of a TCP series on every inc(), several times a connection.
import { Counter, type CounterConfiguration } from 'prom-client';

/** Label sets gathered at most before they are added at once, whether or not anyone reads. */
const MAX_PENDING = 1024;

export class BatchedCounter<T extends string> extends Counter<T> {
  /** Increments not yet added, by the label object they were counted under. */
  readonly #pending = new Map<Partial<Record<T, string>>, number>();

  constructor(config: Omit<CounterConfiguration<T>, 'collect'>) {
    // Every read (a scrape, get(), getMetricsAsJSON) collects first, so it sees every count.
    super({
      ...config,
      collect(this: Counter<T>) {
        (this as BatchedCounter<T>).flush();
      },
    });
  }

  /**
   * Counts `n` under `labels` (default 1), as inc() does. Pass the same object for the same series
   * (TcpLabelCache makes them) and never change it: it is remembered by identity until added.
   */
  add(labels: Partial<Record<T, string>>, n = 1): void {
    if (!Number.isFinite(n) || n < 0) throw new TypeError(`a counter only grows by a finite number >= 0, got ${n}`);
    const c = this.#pending.get(labels);
    if (c !== undefined) {
      this.#pending.set(labels, c + n);
      return;
    }
    if (this.#pending.size >= MAX_PENDING) this.flush();
    this.#pending.set(labels, n);
  }

  /**
   * Adds what was gathered to the counter, in the order the series were first counted. A label
   * set prom-client refuses (a name it does not know) throws, after every other one is added.
   */
  flush(): void {
    if (this.#pending.size === 0) return;
    const pending = [...this.#pending];
    this.#pending.clear();
    let refused: unknown;
    for (const [labels, n] of pending) {
      try {
        this.inc(labels, n);
      } catch (err) {
        refused ??= err;
      }
    }
    if (refused !== undefined) throw refused;
  }

  override reset(): void {
    // prom-client's constructor resets before this class's fields exist.
    if (#pending in this) this.#pending.clear();
    super.reset();
  }
}
