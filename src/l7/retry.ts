// The retries of one request, for HTTP/1.1 and HTTP/2 alike: which outcomes of a try are
// retried, the tries left, the request body kept (bounded) so every try sends the same bytes,
// Envoy's jittered backoff, and where each retry goes (the policy's next(), else the same target).
import type { Logger } from '../log.js';
import type { LocalFailure } from './flags.js';
import { checkDecision } from './hooks.js';
import { endTry, type DirectResponse, type HttpRequestHead, type UpstreamRetry, type UpstreamTarget } from './types.js';

/** How a try ended, as far as retrying goes. */
export type TryOutcome = 'connect' | 'reset' | 'timeout' | 'status';

/** `exhausted`: the policy would retry this outcome but has no retries left (the record gets URX). */
export type RetryPlan = { kind: 'retry'; to: UpstreamTarget | DirectResponse } | { kind: 'exhausted' } | { kind: 'no' };

const NO: RetryPlan = { kind: 'no' };
const EXHAUSTED: RetryPlan = { kind: 'exhausted' };

/** A failed connect is retried when another try may find an endpoint (UF, UH); an overflow (UO) or a closing engine is not. */
export function connectOutcome(f: LocalFailure): TryOutcome | undefined {
  const first = f.flags.split(',')[0];
  return first === 'UF' || first === 'UH' ? 'connect' : undefined;
}

/** The request's Content-Length, when it declares one. */
function declaredLength(req: HttpRequestHead): number | undefined {
  const v = req.header('content-length');
  if (v === undefined) return undefined;
  const n = Number(v);
  return Number.isFinite(n) ? n : undefined;
}

export class Retries {
  readonly #p: UpstreamRetry;
  readonly #bound: number;
  readonly #log: Logger;
  #left: number;
  /** The request body so far; undefined once it outgrew the bound (no retry from then on). */
  #chunks: Buffer[] | undefined = [];
  #bytes = 0;
  ended = false;
  trailers: string[] | undefined;

  private constructor(p: UpstreamRetry, bound: number, declared: number | undefined, log: Logger) {
    this.#p = p;
    this.#bound = bound;
    this.#log = log;
    this.#left = p.attempts;
    // A body declared larger than the bound is never held: it cannot be retried, so why keep it.
    if (declared !== undefined && declared > bound) this.#chunks = undefined;
  }

  /** The retries of a request to `t`, or undefined when it has none; `held`: the body read before routing. */
  static for(t: UpstreamTarget, req: HttpRequestHead, bound: number, log: Logger, held?: { chunks: readonly Buffer[]; ended: boolean; trailers: string[] | undefined }): Retries | undefined {
    const p = t.retry;
    if (!p || p.attempts === 0) return undefined;
    const r = new Retries(p, bound, declaredLength(req), log);
    if (held) {
      for (const b of held.chunks) r.body(b);
      if (held.ended) r.end(held.trailers);
    }
    return r;
  }

  /** 0: none. */
  get perTryTimeoutMs(): number {
    return this.#p.perTryTimeoutMs ?? 0;
  }

  /** The whole request body read so far, while it is kept. */
  get chunks(): readonly Buffer[] | undefined {
    return this.#chunks;
  }

  body(b: Buffer): void {
    if (!this.#chunks) return;
    this.#bytes += b.length;
    if (this.#bytes > this.#bound) this.#chunks = undefined;
    else this.#chunks.push(b);
  }

  end(trailers: string[] | undefined): void {
    this.ended = true;
    this.trailers = trailers;
  }

  /** Whether a response with this status would be retried (cheap: asked for every response). */
  wantsStatus(status: number): boolean {
    return this.#p.codes.includes(status);
  }

  /**
   * What to do after a try ended with `o`: retry (one is taken, and `to` says where), or not.
   * The caller has checked that nothing of a response went to the client yet.
   */
  plan(o: TryOutcome, current: UpstreamTarget, status = 0): RetryPlan {
    const p = this.#p;
    // The try is over whatever comes next: its endpoint is judged on it, retried or not.
    endTry(current, o === 'status' ? status : 'connect-failure', this.#log);
    const retriable = o === 'status' ? p.codes.includes(status) : o === 'timeout' ? true : p.onConnectFailure;
    if (!retriable || this.#chunks === undefined) return NO;
    if (this.#left === 0) return EXHAUSTED;
    let to: UpstreamTarget | DirectResponse = current;
    if (p.next) {
      try {
        to = checkDecision(p.next(), 'retry.next()');
      } catch (err) {
        this.#log.error({ err }, "the retry hook next() failed; the last try's outcome goes to the client");
        return NO;
      }
    }
    this.#left--;
    return { kind: 'retry', to };
  }

  /**
   * How long before the retry just planned goes: Envoy's fully jittered exponential backoff,
   * uniform in [0, (2^n - 1) x base) for the n-th retry, the ceiling capped at 10 x base.
   */
  delayMs(): number {
    const base = this.#p.backoffMs;
    const n = this.#p.attempts - this.#left;
    const ceiling = Math.min(10 * base, (2 ** Math.min(n, 20) - 1) * base);
    return Math.floor(Math.random() * ceiling);
  }
}
