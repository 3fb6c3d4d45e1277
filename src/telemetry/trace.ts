// W3C Trace Context (https://www.w3.org/TR/trace-context/) and x-request-id for proxied requests:
// validate what came in, keep the trace, give the proxy's hop its own span id, fill in what is missing.
import { randomFillSync, randomUUID } from 'node:crypto';

/** A parsed `traceparent`. */
export interface Traceparent {
  version: number;
  /** 32 lowercase hex, not all zero. */
  traceId: string;
  /** 16 lowercase hex, not all zero. */
  parentId: string;
  flags: number;
}

export interface TraceOptions {
  /**
   * Participate (default): the proxy's hop is a span of its own, so a valid incoming trace goes
   * on with a new parent id, as Envoy does when it makes a span. Otherwise forward: a valid
   * traceparent goes on unchanged. Either way a missing or invalid one starts a new trace.
   *
   * Participate on the one L7 pass that owns the request (the source proxy, where routing,
   * retries and timeouts happen, so its span is the parent of every attempt) and forward on any
   * later pass of the same request (the destination side of an in-process hand-off, an inbound
   * L7 pass behind a mesh source), so a request gets one proxy span, not two. Until nodemesh
   * exports spans, a participating hop names a parent that no backend ever receives: tracing
   * UIs show the app's server span under a missing span. Forwarding everywhere keeps the app's
   * spans directly linked, at the cost of no proxy span later.
   */
  participate?: boolean;
}

export interface TraceHeaders {
  /** The traceparent to send upstream. */
  traceparent: string;
  traceId: string;
  /** The parent-id sent upstream: the proxy's span when it participates, else the caller's. */
  spanId: string;
  /** The incoming parent-id the proxy's span is a child of; undefined when the trace starts here or is forwarded. */
  parentSpanId: string | undefined;
  sampled: boolean;
  /** x-request-id as received, or a new UUID v4. */
  requestId: string;
  incoming: 'valid' | 'absent' | 'invalid';
  /** Fields to set, raw flat pairs: a new or re-parented traceparent, a new x-request-id. */
  add: string[];
  /** Lowercase names of fields to drop before adding: the traceparent replaced, the tracestate of a restarted trace, an empty x-request-id. */
  remove: string[];
}

const DASH = 0x2d;
/** Lowercase hex digits only: the spec's HEXDIGLC. */
const HEX = new Int8Array(128).fill(-1);
for (let i = 0; i < 10; i++) HEX[0x30 + i] = i;
for (let i = 0; i < 6; i++) HEX[0x61 + i] = 10 + i;

function hexAt(v: string, i: number): number {
  const c = v.charCodeAt(i);
  return c < 128 ? HEX[c]! : -1;
}

/** Lowercase hex over [from, to) and not all zero. */
function validId(v: string, from: number, to: number): boolean {
  let nonZero = false;
  for (let i = from; i < to; i++) {
    const d = hexAt(v, i);
    if (d < 0) return false;
    if (d !== 0) nonZero = true;
  }
  return nonZero;
}

/**
 * Parses a traceparent per the spec's versioning rules: version 00 is exactly 55 characters; a
 * later version (never ff) must start with the 00 fields, followed by nothing or by a dash.
 */
export function parseTraceparent(value: string): Traceparent | undefined {
  let v = value;
  // Field values may carry optional whitespace around them (RFC 9110 5.5).
  if (v.length > 0 && (isOws(v.charCodeAt(0)) || isOws(v.charCodeAt(v.length - 1)))) v = v.trim();
  if (v.length < 55) return undefined;
  const v0 = hexAt(v, 0);
  const v1 = hexAt(v, 1);
  if (v0 < 0 || v1 < 0 || v.charCodeAt(2) !== DASH) return undefined;
  const version = v0 * 16 + v1;
  if (version === 0xff) return undefined;
  if (version === 0 ? v.length !== 55 : v.length > 55 && v.charCodeAt(55) !== DASH) return undefined;
  if (!validId(v, 3, 35) || v.charCodeAt(35) !== DASH || !validId(v, 36, 52) || v.charCodeAt(52) !== DASH) return undefined;
  const f0 = hexAt(v, 53);
  const f1 = hexAt(v, 54);
  if (f0 < 0 || f1 < 0) return undefined;
  return { version, traceId: v.slice(3, 35), parentId: v.slice(36, 52), flags: f0 * 16 + f1 };
}

function isOws(c: number): boolean {
  return c === 0x20 || c === 0x09;
}

/** Whether a field name equals `lower` (already lowercase), ignoring ASCII case. */
function nameIs(name: string, lower: string): boolean {
  if (name.length !== lower.length) return false;
  for (let i = 0; i < name.length; i++) {
    let c = name.charCodeAt(i);
    if (c >= 0x41 && c <= 0x5a) c += 0x20;
    if (c !== lower.charCodeAt(i)) return false;
  }
  return true;
}

/**
 * Trace context for one request, from its raw flat header pairs. A valid traceparent keeps its
 * trace id and sampled flag (other flags are cleared: the spec says they MUST be zero); a
 * missing, invalid or repeated one starts a new unsampled trace and drops the tracestate that
 * belonged to it. x-request-id is kept when present, else a UUID v4 is made.
 */
export function traceHeaders(headers: readonly string[], o: TraceOptions = {}): TraceHeaders {
  let tp: string | undefined;
  let tpCount = 0;
  let tracestate = false;
  let rid: string | undefined;
  let ridField = false;
  for (let i = 0; i + 1 < headers.length; i += 2) {
    const n = headers[i]!;
    switch (n.length) {
      case 11:
        if (nameIs(n, 'traceparent')) {
          tpCount++;
          tp = headers[i + 1];
        }
        break;
      case 10:
        if (nameIs(n, 'tracestate')) tracestate = true;
        break;
      case 12:
        if (!ridField && nameIs(n, 'x-request-id')) {
          ridField = true;
          rid = headers[i + 1];
        }
        break;
    }
  }
  const add: string[] = [];
  const remove: string[] = [];
  // A repeated traceparent would be combined into one invalid value by any HTTP stack.
  const parsed = tpCount === 1 ? parseTraceparent(tp!) : undefined;
  let traceparent: string;
  let traceId: string;
  let spanId: string;
  let parentSpanId: string | undefined;
  let sampled: boolean;
  if (parsed) {
    traceId = parsed.traceId;
    sampled = (parsed.flags & 1) === 1;
    if (o.participate === false) {
      traceparent = tp!;
      spanId = parsed.parentId;
    } else {
      spanId = newSpanId();
      parentSpanId = parsed.parentId;
      traceparent = `00-${traceId}-${spanId}-${sampled ? '01' : '00'}`;
      add.push('traceparent', traceparent);
      remove.push('traceparent');
    }
  } else {
    traceId = newTraceId();
    spanId = newSpanId();
    sampled = false;
    traceparent = `00-${traceId}-${spanId}-00`;
    add.push('traceparent', traceparent);
    if (tpCount > 0) remove.push('traceparent');
    if (tracestate) remove.push('tracestate');
  }
  let requestId = rid?.trim() ?? '';
  if (requestId === '') {
    requestId = randomUUID();
    add.push('x-request-id', requestId);
    if (ridField) remove.push('x-request-id');
  }
  return { traceparent, traceId, spanId, parentSpanId, sampled, requestId, incoming: parsed ? 'valid' : tpCount === 0 ? 'absent' : 'invalid', add, remove };
}

/** The header pairs with `t` applied: its `remove` names dropped, its `add` pairs appended. The same array when there is nothing to do. */
export function applyTraceHeaders(headers: readonly string[], t: Pick<TraceHeaders, 'add' | 'remove'>): readonly string[] {
  if (t.add.length === 0 && t.remove.length === 0) return headers;
  const out: string[] = [];
  for (let i = 0; i + 1 < headers.length; i += 2) {
    const n = headers[i]!;
    if (t.remove.some((r) => nameIs(n, r))) continue;
    out.push(n, headers[i + 1]!);
  }
  for (const x of t.add) out.push(x);
  return out;
}

// Ids come from a pooled random buffer: one randomFillSync per few hundred requests instead of
// a randomBytes Buffer for each, hex-encoded through a table (cheaper than Buffer#toString here).
const POOL = Buffer.allocUnsafe(4096);
let poolAt = POOL.length;
const BYTE_HEX = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, '0'));

function randomHex(bytes: number): string {
  for (;;) {
    if (poolAt + bytes > POOL.length) {
      randomFillSync(POOL);
      poolAt = 0;
    }
    let s = '';
    let any = 0;
    for (let i = poolAt, end = poolAt + bytes; i < end; i++) {
      const b = POOL[i]!;
      any |= b;
      s += BYTE_HEX[b]!;
    }
    poolAt += bytes;
    // All-zero ids are invalid; 2^-64 odds at worst, but never send one.
    if (any !== 0) return s;
  }
}

/** A random 16-hex span (parent) id, never all zero. */
export function newSpanId(): string {
  return randomHex(8);
}

/** A random 32-hex trace id, never all zero. */
export function newTraceId(): string {
  return randomHex(16);
}
