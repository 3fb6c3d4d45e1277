// The per-request access log: a JSON line per finished request with the fields of Istio's JSON
// access log, off by default, and sampled, rate-capped and buffered so it cannot slow the proxy.
import { pino, type Logger } from 'pino';
import { UsageError } from '../errors.js';
import type { PeerInfo, Reporter } from './labels.js';
import type { RequestFacts } from './requests.js';

export const ACCESS_LOG_MODES = ['off', 'all', 'errors'] as const;
/** `off`: nothing; `all`: every request (sampled by `sampleRate`); `errors`: failed requests only. */
export type AccessLogMode = (typeof ACCESS_LOG_MODES)[number];

/** The value of a `--access-log` style option. */
export function parseAccessLogMode(value: string, option = '--access-log'): AccessLogMode {
  if ((ACCESS_LOG_MODES as readonly string[]).includes(value)) return value as AccessLogMode;
  throw new UsageError(`${option} must be one of ${ACCESS_LOG_MODES.join(', ')}; got ${JSON.stringify(value)}`, { option, value });
}

export interface AccessLogOptions {
  mode: AccessLogMode;
  /** A file descriptor (default 1, stdout) or a file path (appended to, directories made). */
  dest?: number | string;
  /** Lines per second at most, bursts up to as many (default 1000); beyond, lines are dropped and counted. */
  maxLinesPerSec?: number;
  /** In `all` mode, the share of successful requests logged (0..1, default 1); failed ones are always logged. */
  sampleRate?: number;
  /** Bytes gathered before a write (default 4096): fewer, larger writes. */
  bufferBytes?: number;
  /** Bytes buffered at most while the destination is slow (default 4 MiB); lines beyond are dropped and counted. */
  maxBufferBytes?: number;
  /** Milliseconds, monotonic; for tests. */
  clock?: () => number;
}

/** Where a request came from and went, from the reporter's view; the proxy's ConnectionView fits. */
export interface AccessLogContext {
  reporter?: Reporter;
  source?: PeerInfo & { ip?: string; port?: number };
  destination?: PeerInfo & { ip?: string; port?: number };
  /** The address the app asked for (outbound) or that was steered to us (inbound). */
  originalDst?: string;
  service?: { hostname: string } | undefined;
}

export interface AccessLogStats {
  written: number;
  /** Over the rate cap, or the buffer was full. */
  dropped: number;
  /** Left out by `sampleRate`. */
  sampledOut: number;
}

/** Client-controlled strings are cut here, so one request cannot make a huge line. */
const MAX_FIELD = 2048;

/** A request that failed: no response, a 4xx/5xx, response flags, or a gRPC status other than OK. */
export function isFailedRequest(r: Pick<RequestFacts, 'status' | 'responseFlags' | 'grpcStatus'>): boolean {
  return r.status === 0 || r.status >= 400 || (r.responseFlags !== '-' && r.responseFlags !== '') || (r.grpcStatus !== undefined && r.grpcStatus !== '0');
}

export class AccessLog {
  readonly mode: AccessLogMode;
  readonly #logger: Logger | undefined;
  readonly #dest: ReturnType<typeof pino.destination> | undefined;
  readonly #rate: number;
  readonly #sample: number;
  readonly #clock: () => number;
  #tokens: number;
  #refilledAt: number;
  readonly #stats: AccessLogStats = { written: 0, dropped: 0, sampledOut: 0 };
  #closed: Promise<void> | undefined;
  #refused = false;

  constructor(o: AccessLogOptions) {
    this.mode = o.mode;
    this.#rate = positive(o.maxLinesPerSec ?? 1000, 'maxLinesPerSec');
    this.#sample = o.sampleRate ?? 1;
    if (!(this.#sample >= 0 && this.#sample <= 1)) throw new RangeError(`sampleRate must be within 0..1, got ${o.sampleRate}`);
    this.#clock = o.clock ?? (() => performance.now());
    this.#tokens = this.#rate;
    this.#refilledAt = this.#clock();
    if (o.mode === 'off') return;
    const dest = o.dest ?? 1;
    const minLength = positive(o.bufferBytes ?? 4096, 'bufferBytes');
    const maxLength = positive(o.maxBufferBytes ?? 4 * 1024 * 1024, 'maxBufferBytes');
    // sonic-boom: asynchronous writes, and at most maxLength bytes queued; beyond, it drops.
    this.#dest = pino.destination({ ...(typeof dest === 'number' ? { fd: dest } : { dest, mkdir: true }), sync: false, minLength, maxLength });
    // Emitted synchronously from within the write that found no room.
    this.#dest.on('drop', () => {
      this.#refused = true;
    });
    // Envoy's fields after pino's level; no pid, hostname or time (start_time says when).
    this.#logger = pino({ base: null, timestamp: false }, this.#dest);
  }

  /** Whether a request would be considered at all; lets the caller skip gathering its context. */
  wants(r: Pick<RequestFacts, 'status' | 'responseFlags' | 'grpcStatus'>): boolean {
    return this.mode === 'all' || (this.mode === 'errors' && isFailedRequest(r));
  }

  /** Logs one finished request if the mode, sampling and rate cap let it; true when it was written. */
  write(ctx: AccessLogContext, r: RequestFacts): boolean {
    const logger = this.#logger;
    if (logger === undefined || this.#closed) return false;
    const failed = isFailedRequest(r);
    if (!failed) {
      if (this.mode !== 'all') return false;
      if (this.#sample < 1 && !(Math.random() < this.#sample)) {
        this.#stats.sampledOut++;
        return false;
      }
    }
    if (!this.#take()) {
      this.#stats.dropped++;
      return false;
    }
    this.#refused = false;
    logger.info(line(ctx, r));
    if (this.#refused) {
      this.#stats.dropped++;
      return false;
    }
    this.#stats.written++;
    return true;
  }

  stats(): AccessLogStats {
    return { ...this.#stats };
  }

  /** Flushes what is buffered and closes the destination (never fd 1 or 2 themselves: sonic-boom leaves those open). */
  close(): Promise<void> {
    if (this.#closed) return this.#closed;
    const dest = this.#dest;
    this.#closed = dest
      ? new Promise<void>((resolve) => {
          dest.once('close', () => resolve());
          dest.once('error', () => resolve());
          dest.end();
        })
      : Promise.resolve();
    return this.#closed;
  }

  /** Token bucket: `rate` tokens a second, holding a second's worth at most. */
  #take(): boolean {
    if (this.#tokens < 1) {
      const now = this.#clock();
      this.#tokens = Math.min(this.#rate, this.#tokens + ((now - this.#refilledAt) * this.#rate) / 1000);
      this.#refilledAt = now;
      if (this.#tokens < 1) return false;
    }
    this.#tokens--;
    return true;
  }
}

function positive(v: number, name: string): number {
  if (!(Number.isFinite(v) && v > 0)) throw new RangeError(`${name} must be a positive number, got ${v}`);
  return v;
}

function cut(s: string | undefined): string | undefined {
  return s !== undefined && s.length > MAX_FIELD ? s.slice(0, MAX_FIELD) : s;
}

function addr(p: { ip?: string; port?: number } | undefined): string | undefined {
  return p?.ip === undefined ? undefined : p.port === undefined ? p.ip : `${p.ip}:${p.port}`;
}

/** Istio's JSON access log field names (meshConfig.accessLogEncoding: JSON), then nodemesh's own. Undefined fields are left out. */
function line(ctx: AccessLogContext, r: RequestFacts): Record<string, unknown> {
  return {
    start_time: new Date(Date.now() - r.durationMs).toISOString(),
    method: r.method,
    path: cut(r.path),
    protocol: r.protocol,
    response_code: r.status,
    response_flags: r.responseFlags || '-',
    bytes_received: r.requestBytes,
    bytes_sent: r.responseBytes,
    duration: Math.round(r.durationMs),
    upstream_host: r.upstream,
    user_agent: cut(r.userAgent),
    request_id: cut(r.requestId),
    authority: cut(r.authority),
    downstream_remote_address: addr(ctx.source),
    downstream_local_address: ctx.originalDst ?? addr(ctx.destination),
    trace_id: r.traceId,
    grpc_status: r.grpcStatus,
    upgraded: r.upgraded || undefined,
    attempts: r.attempts,
    reporter: ctx.reporter,
    source_workload: ctx.source?.workload,
    source_namespace: ctx.source?.namespace,
    source_principal: ctx.source?.principal ? `spiffe://${ctx.source.principal}` : undefined,
    destination_workload: ctx.destination?.workload,
    destination_namespace: ctx.destination?.namespace,
    destination_service: ctx.service?.hostname,
  };
}
