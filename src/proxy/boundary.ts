// Each accepted connection is its own failure domain (Envoy's per-connection filter chain,
// ztunnel's per-connection task): the one place that runs a connection's handler and, on any
// throw or rejection, resets that connection, logs it with Envoy-style response_flags and counts
// it. No error of one connection reaches the process, so an 'uncaughtException' is always a bug.
import type { Socket } from 'node:net';
import type { Logger } from '../log.js';
import type { ConnectionErrorReason, ErrorDirection } from '../telemetry/index.js';

/** What the proxy books for a connection it gave up on. */
export interface Failure {
  reason: ConnectionErrorReason;
  /** Envoy-style: DC (downstream gone), NR (no route), DENY, UF (upstream failure), LR (local reset). */
  flags: string;
  /** The error's code (NM_ERR_* or errno), when it has one. */
  code?: string;
}

/** Log fields that say which connection it was (pod, peer, listener). */
export type Fields = Record<string, unknown>;

export interface BoundaryOptions {
  log: Logger;
  /** Counts failures (`nodemesh_connection_errors_total`); absent in tests that only log. */
  metrics?: { connectionError(direction: ErrorDirection, reason: ConnectionErrorReason): void };
}

/**
 * Errnos that mean the peer is already gone: it reset (SO_LINGER 0) or closed right after its
 * connect, before the proxy was done with the connection. Not a fault of ours; quiet.
 */
const PEER_GONE = new Set(['ENOTCONN', 'ECONNRESET', 'EPIPE', 'ECONNABORTED']);

const kFailure = Symbol('nodemesh.proxy.failure');

type Tagged = { [kFailure]?: Failure };

function codeOf(err: unknown): string | undefined {
  const e = err as { code?: unknown } | null;
  if (!e || typeof e !== 'object') return undefined;
  return typeof e.code === 'string' ? e.code : undefined;
}

/** The errno behind an error: its own code, or the system error a NodemeshError wraps. */
function errnoOf(err: unknown): string | undefined {
  const e = err as { code?: unknown; details?: { sysCode?: unknown }; cause?: { code?: unknown } } | null;
  if (!e || typeof e !== 'object') return undefined;
  if (typeof e.code === 'string' && /^E[A-Z0-9]+$/.test(e.code)) return e.code;
  if (typeof e.details?.sysCode === 'string') return e.details.sysCode;
  return typeof e.cause?.code === 'string' ? e.cause.code : undefined;
}

/**
 * Runs one stage of a connection's set-up; what it throws is booked under `reason` and `flags`
 * (e.g. an authorizer that throws is `authorize`, DENY: the connection is denied, never let through).
 */
export function stage<T>(reason: ConnectionErrorReason, flags: string, fn: () => T): T {
  try {
    return fn();
  } catch (err) {
    throw tagged(err, { reason, flags });
  }
}

/** `err` marked with how to book it; non-objects are wrapped in an Error first. */
export function tagged(err: unknown, f: Omit<Failure, 'code'>): unknown {
  const e = (err !== null && typeof err === 'object' ? err : new Error(String(err))) as Tagged;
  const code = codeOf(e);
  try {
    Object.defineProperty(e, kFailure, { value: { ...f, ...(code ? { code } : {}) }, configurable: true });
  } catch {
    /* a frozen error: classified by its code instead */
  }
  return e;
}

/** How to book an error: its stage when one was tagged, else by its code. */
export function classify(err: unknown): Failure {
  const tag = (err as Tagged | null)?.[kFailure];
  if (tag) return tag;
  const code = codeOf(err);
  const errno = errnoOf(err);
  const withCode = code ? { code } : {};
  if ((err as { details?: { peerGone?: unknown } } | null)?.details?.peerGone === true || (errno && PEER_GONE.has(errno))) {
    return { reason: 'peer_gone', flags: 'DC', ...(errno ? { code: errno } : withCode) };
  }
  if (code === 'NM_ERR_ORIGINAL_DST') return { reason: 'original_dst', flags: 'NR', ...withCode };
  return { reason: 'internal', flags: 'LR', ...withCode };
}

const LEVEL: Record<ConnectionErrorReason, 'debug' | 'info' | 'warn' | 'error'> = {
  peer_gone: 'debug',
  upstream_connect: 'debug', // its access log line already says why
  original_dst: 'warn',
  authorize: 'error',
  accept: 'error',
  internal: 'error',
};

const MESSAGE: Record<ConnectionErrorReason, string> = {
  peer_gone: 'the peer went away before the connection was set up; dropped',
  upstream_connect: 'upstream not reachable; the connection is reset',
  original_dst: 'original destination unknown; the connection is reset',
  authorize: 'authorization failed with an error; the connection is denied and reset',
  accept: 'the listener could not accept a connection',
  internal: 'the connection failed inside the proxy; it is reset (this is a bug: please report it with this log line)',
};

/** Resets a socket whatever state it is in; never throws. */
export function resetQuietly(sock: { resetAndDestroy(): unknown; destroy(): unknown; destroyed?: boolean }): void {
  if (sock.destroyed) return;
  try {
    sock.resetAndDestroy();
  } catch {
    // Not a TCP handle (a pipe, a TLS socket): a plain close is the best we can do.
    try {
      sock.destroy();
    } catch {
      /* nothing left to close */
    }
  }
}

export class Boundary {
  readonly #log: Logger;
  readonly #metrics: BoundaryOptions['metrics'];

  constructor(o: BoundaryOptions) {
    this.#log = o.log;
    this.#metrics = o.metrics;
  }

  /**
   * Logs and counts a connection the caller already answered (reset it, or sent an HBONE
   * status). Never throws, even when logging or the counter do.
   */
  record(direction: ErrorDirection, err: unknown, fields: Fields = {}, failure: Failure = classify(err)): Failure {
    try {
      this.#metrics?.connectionError(direction, failure.reason);
    } catch {
      /* a broken counter must not take the connection's error path down with it */
    }
    try {
      const e = err instanceof Error ? { err } : {};
      this.#log[LEVEL[failure.reason]]({ ...fields, direction, reason: failure.reason, response_flags: failure.flags, code: failure.code, ...e }, MESSAGE[failure.reason]);
    } catch {
      /* nor a broken logger */
    }
    return failure;
  }

  /**
   * Runs one connection's work. A synchronous throw or a rejection of the promise it returns
   * resets the connection (`reset`) and is recorded; nothing escapes.
   */
  run(direction: ErrorDirection, reset: () => void, work: () => unknown, fields: Fields = {}): void {
    const fail = (err: unknown): void => {
      try {
        reset();
      } catch {
        /* already gone */
      }
      this.record(direction, err, fields);
    };
    try {
      const r = work();
      if (r && typeof (r as PromiseLike<unknown>).then === 'function') (r as PromiseLike<unknown>).then(undefined, fail);
    } catch (err) {
      fail(err);
    }
  }

  /**
   * The 'connection' listener of a listener. A connection whose peer is already gone (reset
   * before we accepted it: no remote address) is counted and dropped quietly; every other one
   * runs `handler` inside run(), reset on any failure.
   */
  accept(direction: ErrorDirection, fields: Fields, handler: (sock: Socket) => unknown): (sock: Socket) => void {
    const quiet = (err: Error): void => this.#log.debug({ ...fields, direction, err }, 'client socket error');
    return (sock) => {
      // The handlers and the relay add their own listeners; this one makes sure an error in
      // between can never become an 'uncaughtException'.
      sock.on('error', quiet);
      if (sock.remoteAddress === undefined || sock.remotePort === undefined) {
        this.record(direction, undefined, fields, { reason: 'peer_gone', flags: 'DC', code: 'ENOTCONN' });
        resetQuietly(sock);
        return;
      }
      this.run(direction, () => resetQuietly(sock), () => handler(sock), { ...fields, peer: `${sock.remoteAddress}:${sock.remotePort}` });
    };
  }
}
