// What the inbound HBONE server (server.ts) hands to authorization and telemetry: one CONNECT
// request that passed the checks, the decision on it, a refused one, and a relay in flight.
import type { RelayProgress, RelayResult } from '../relay.js';
import type { SocketAddress } from '../types.js';

/** One CONNECT request that passed the request checks, as authorization and telemetry see it. */
export interface InboundRequest {
  /** `:authority`: the address the source dialed, an address of this pod. */
  target: SocketAddress;
  /** The client certificate's SPIFFE ID (verified: chain and trust domain). */
  peerIdentity: string;
  /** The TCP peer of the HBONE connection (the source pod, or its node). */
  clientAddr: SocketAddress;
  /** The original client IP from `forwarded: for=...`, when sent and valid. */
  forwardedFor?: string;
  /** W3C traceparent as received, or a new one when it was missing or invalid. */
  traceparent: string;
}

export type InboundDecision = { allow: true } | { allow: false; reason: string; policy?: string };

export type InboundStatus = 400 | 401 | 500 | 503;

/** A CONNECT answered with something other than 200, for telemetry and access logs. */
export interface InboundRejection {
  status: InboundStatus;
  reason: string;
  peerIdentity: string;
  clientAddr: SocketAddress;
  /** Present once the request passed the checks (401, 500, 503). */
  request?: InboundRequest;
  policy?: string;
  error?: Error;
}

/** A relay in flight: live byte counts and its outcome. */
export interface InboundRelay {
  done: Promise<RelayResult>;
  progress: RelayProgress;
}
