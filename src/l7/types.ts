// What the L7 engine offers its user (the proxy): the request a route hook sees, what the hook
// answers, the per-request record for telemetry, and the engine's options.
import type { Duplex } from 'node:stream';
import type { Logger } from '../log.js';

export type HttpProtocol = 'HTTP/1.0' | 'HTTP/1.1' | 'HTTP/2';

/** Header fields as the engine takes them: raw flat pairs, `[name, value]` pairs, or a record. */
export type HeaderInput = readonly string[] | ReadonlyArray<readonly [string, string]> | Readonly<Record<string, string>>;

/**
 * A request head, as the route hook sees it. `path`, `authority` and `headers` may be replaced
 * (URL rewrites, header filters): the engine then validates what it writes, which it skips for
 * what llhttp already checked.
 */
export class HttpRequestHead {
  readonly method: string;
  readonly protocol: HttpProtocol;
  #path: string;
  #authority: string;
  #headers: readonly string[];
  /** Something set path, authority or headers since the parser produced them. */
  dirty = false;
  /** The authority was set: the upstream's Host field is rewritten (or added) to match. */
  authorityChanged = false;

  constructor(method: string, path: string, authority: string, headers: readonly string[], protocol: HttpProtocol) {
    this.method = method;
    this.#path = path;
    this.#authority = authority;
    this.#headers = headers;
    this.protocol = protocol;
  }

  /** The request target: `/path?query` (origin form). */
  get path(): string {
    return this.#path;
  }
  set path(p: string) {
    this.#path = p;
    this.dirty = true;
  }
  /**
   * Host (HTTP/1.1) or :authority (HTTP/2); empty for an HTTP/1.0 request without Host. Set it
   * (a URLRewrite hostname, or the Service's name for such a request) and the upstream's Host
   * field follows.
   */
  get authority(): string {
    return this.#authority;
  }
  set authority(a: string) {
    this.#authority = a;
    this.dirty = true;
    this.authorityChanged = true;
  }
  /** Raw flat pairs `[name, value, ...]`, names in the case received. Assign a new array to change them. */
  get headers(): readonly string[] {
    return this.#headers;
  }
  set headers(h: readonly string[]) {
    this.#headers = h;
    this.dirty = true;
  }

  /** The first value of a field, by case-insensitive name. */
  header(name: string): string | undefined {
    return headerValue(this.#headers, name);
  }
}

/** A response head before it goes to the client, for response filters. */
export interface HttpResponseHead {
  readonly status: number;
  /** Raw flat pairs; assign a new array to change them. */
  headers: readonly string[];
}

/** Send the request to an upstream, over a pooled connection or a new one from `open()`. */
export interface UpstreamTarget {
  /**
   * The pool key: requests with the same key share keep-alive connections. Include everything
   * that makes a connection different (endpoint address, identities, HBONE or plain).
   */
  upstream: string;
  /**
   * Opens a new connection (a TCP socket or an HBONE stream). A rejection answers 503 with the
   * error's `responseFlags` if it has one (`UH` when no endpoint is healthy), else `UF`.
   */
  open(): Promise<Duplex>;
  /**
   * Request timeout from dispatch to the end of the response (Gateway API `timeouts.request`):
   * 504 UT before the response head, a reset with UT after it. Undefined: the engine's default.
   */
  timeoutMs?: number;
  /** Sees (and may change) the response head before the client does. */
  onResponse?(res: HttpResponseHead): void;
  /** Retries of this request (docs/l7.md, Retries); none when undefined. */
  retry?: UpstreamRetry;
  /**
   * Shadows: each gets a copy of the request (its Host or :authority with `-shadow` added, as
   * Envoy does) and its response is read and dropped. A shadow that falls behind is dropped;
   * none ever delays or fails the request itself.
   */
  mirror?: UpstreamTarget[];
  /** An upstream connection (or HTTP/2 session) of this key is closed after this many requests; 0 or undefined: the pool's default. */
  maxRequestsPerConnection?: number;
  /** HTTP/1.1 connections of this key at most (lower than the engine's `pool.maxConnections` to count). */
  maxConnections?: number;
  /** Requests of this key waiting for a connection at most; more get 503 UO (lower than the engine's to count). */
  maxPending?: number;
  /**
   * Called when a try to this target is over (outlier detection, in-flight counts): with the
   * status it answered (a retried one included), `connect-failure` when it could not be had or
   * failed before a response, or undefined when the client left first. May be called more than
   * once for one try; a throw is logged and ignored.
   */
  onTryEnd?(outcome: TryEnd): void;
}

/** How one try ended, as onTryEnd tells it. */
export type TryEnd = number | 'connect-failure' | undefined;

/** The outcome of a finished request's last try, from its record's status and flags. */
export function tryEndOf(status: number, flags: string): TryEnd {
  if (flags.includes('DC')) return undefined;
  // The proxy's own 503 for an upstream it could not have (UF, UH) or that reset (UC) says nothing of an app's answer.
  if (status === 0 || /\bU[FHC]\b/.test(flags)) return 'connect-failure';
  return status;
}

/** Calls the target's onTryEnd, never letting it throw into the engine. */
export function endTry(t: UpstreamTarget | undefined, outcome: TryEnd, log: Logger): void {
  const f = t?.onTryEnd;
  if (!f) return;
  try {
    f.call(t, outcome);
  } catch (err) {
    log.error({ err }, 'the onTryEnd hook failed');
  }
}

/**
 * When and how a request is tried again. Only a request whose body is known in whole can be:
 * one with no body, or a body within `EngineOptions.retryBufferBytes`; and only before any byte
 * of a response went to the client.
 */
export interface UpstreamRetry {
  /** Retries after the first try; 0: none. */
  attempts: number;
  /** Base of the fully jittered exponential backoff (Envoy's): retry n waits up to (2^n - 1) x this, at most 10 x. */
  backoffMs: number;
  /** Response statuses that are retried: that response is read and dropped, never shown to the client. */
  codes: readonly number[];
  /** Retry a try that could not connect (UF, UH) or was reset before its response head (UC). */
  onConnectFailure: boolean;
  /** Each try's own timeout, from its dispatch to the end of its response: one that expires before the response head went to the client is retried (UT). */
  perTryTimeoutMs?: number;
  /**
   * Where each retry goes (another endpoint, say): called once per retry. Undefined: the same
   * target. A DirectResponse answers the request with it; a throw answers the last try's outcome.
   */
  next?: () => UpstreamTarget | DirectResponse;
}

/** Answer the request here, without an upstream (no route, redirects, faults, denials). */
export interface DirectResponse {
  respond: {
    status: number;
    headers?: HeaderInput;
    body?: string | Buffer;
    /** Envoy-style flags for telemetry: NR, FI, DENY, ... */
    responseFlags?: string;
    /** The record's `upstream` for this answer (default '-'): who answered, when the caller wants to know (a destination's proxy in process). */
    upstream?: string;
    /** The policy (`ns/name`) that refused the request, for the record. */
    policy?: string;
  };
}

export type RouteDecision = UpstreamTarget | DirectResponse;

/** One finished request, for metrics and the access log. */
export interface RequestRecord {
  protocol: HttpProtocol;
  /** '-' when the request never got far enough to have one (a malformed head). */
  method: string;
  path: string;
  authority: string;
  /** The status sent to the client; 0 when no response began (the client left first). */
  status: number;
  /** Body bytes received from the client. */
  requestBytes: number;
  /** Body bytes sent to the client. */
  responseBytes: number;
  durationMs: number;
  /** Envoy-style response flags, comma-separated; '-' when none (docs/l7.md). */
  responseFlags: string;
  /** The pool key the request went to; '-' when none. */
  upstream: string;
  /** The request became a tunnel (101 Switching Protocols); bytes count the tunnel's payload. */
  upgraded: boolean;
  /** HTTP/2 gRPC responses: the `grpc-status` trailer (or header), when present. */
  grpcStatus?: string;
  /** The policy a direct answer named (a refusal's `ns/name`). */
  policy?: string;
  /** Tries made upstream (1 plus the retries; 0 when the request never went to an upstream). */
  attempts: number;
}

/** What one client connection does with its requests. */
export interface SessionHooks {
  /** Decides each request. A throw or rejection answers 500 (and is logged), never crashes. */
  route(req: HttpRequestHead): RouteDecision | Promise<RouteDecision>;
  /** Called once per finished request; a throw is logged and ignored. */
  onRequest?(r: RequestRecord): void;
}

export interface PoolLimits {
  /** Connections per upstream key, in use or idle (default 1024). */
  maxConnections?: number;
  /** Requests waiting for a connection per key beyond that (default 1024); more get 503 UO. */
  maxPending?: number;
  /** Idle keep-alive connections kept per key (default 128). */
  maxIdle?: number;
  /** An idle connection is closed after this long (default 30 s), or sooner if the upstream's Keep-Alive: timeout says so. */
  idleTimeoutMs?: number;
  /** A connection (or HTTP/2 session) is closed after this many requests (default 0: no limit); a route's `maxRequestsPerConnection` overrides it. */
  maxRequestsPerConnection?: number;
}

export interface EngineOptions {
  /** Request head limit (request line and fields), bytes; larger gets 431 (default 60 KiB, Envoy's). */
  maxHeaderBytes?: number;
  /** A request head must be complete this long after its first byte, or 408 (default 10 s). */
  headerTimeoutMs?: number;
  /** A keep-alive client connection with no request for this long is closed (default 1 h, Envoy's). */
  idleTimeoutMs?: number;
  /** Opening an upstream connection: longer is 503 UF (default 10 s). */
  connectTimeoutMs?: number;
  /** Default request timeout when the route sets none; 0 disables (default 0: routes set it). */
  requestTimeoutMs?: number;
  /** How often timeouts are checked (default 250 ms); timeouts fire within this much of their value. */
  sweepMs?: number;
  pool?: PoolLimits;
  /** Request body bytes held per request so it can be retried (default 64 KiB); a larger body is not retried. */
  retryBufferBytes?: number;
  /** Bytes a mirror may have queued (unsent, or unread by its upstream) before it is dropped (default 256 KiB). */
  mirrorQueueBytes?: number;
  log?: Logger;
}

/** The first value of a field in raw flat pairs, by case-insensitive name. */
export function headerValue(h: readonly string[], name: string): string | undefined {
  const n = name.length;
  const lower = name.toLowerCase();
  for (let i = 0; i < h.length; i += 2) {
    const k = h[i]!;
    if (k.length === n && k.toLowerCase() === lower) return h[i + 1];
  }
  return undefined;
}

/** Either end of a proxied stream: a socket, or anything socket-like (an HBONE stream). */
export type Stream = Duplex & { setNoDelay?(noDelay?: boolean): unknown; resetAndDestroy?(): unknown };

/** Resets a stream when it can (RST / RST_STREAM), so the peer sees a failure, not a clean end. */
export function resetStream(s: Stream): void {
  if (s.destroyed) return;
  if (typeof s.resetAndDestroy === 'function') {
    try {
      s.resetAndDestroy();
      return;
    } catch {
      // A socket that never connected cannot be reset; destroying it is all there is.
    }
  }
  s.destroy();
}
