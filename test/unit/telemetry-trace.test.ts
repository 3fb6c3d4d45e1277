// W3C Trace Context for proxied requests: the spec's valid and invalid traceparent values, a
// valid trace carried on under the proxy's own span id (or forwarded as is), a new trace when
// the incoming one is missing or broken, and x-request-id kept or made.
import { describe, expect, it } from 'vitest';
import { applyTraceHeaders, parseTraceparent, traceHeaders } from '../../src/telemetry/trace.js';

const TRACE = '4bf92f3577b34da6a3ce929d0e0e4736';
const PARENT = '00f067aa0ba902b7';
const VALID = `00-${TRACE}-${PARENT}-01`;
const UUID_V4 = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

describe('parseTraceparent', () => {
  it('reads the examples of the spec, sampled and not', () => {
    expect(parseTraceparent(VALID)).toEqual({ version: 0, traceId: TRACE, parentId: PARENT, flags: 1 });
    expect(parseTraceparent(`00-${TRACE}-${PARENT}-00`)?.flags).toBe(0);
    expect(parseTraceparent(` ${VALID}\t`)?.traceId).toBe(TRACE);
  });

  it.each([
    ['version ff', `ff-${TRACE}-${PARENT}-01`],
    ['uppercase hex', `00-${TRACE.toUpperCase()}-${PARENT}-01`],
    ['an all-zero trace id', `00-${'0'.repeat(32)}-${PARENT}-01`],
    ['an all-zero parent id', `00-${TRACE}-${'0'.repeat(16)}-01`],
    ['version 00 with more fields', `${VALID}-extra`],
    ['a short trace id', `00-${TRACE.slice(1)}-${PARENT}-01`],
    ['a missing dash', `00-${TRACE}${PARENT}-01`],
    ['non-hex flags', `00-${TRACE}-${PARENT}-0g`],
    ['a non-hex version', `0x-${TRACE}-${PARENT}-01`],
    ['a later version running on without a dash', `cc-${TRACE}-${PARENT}-01x`],
    ['nothing', ''],
  ])('refuses %s', (_what, value) => {
    expect(parseTraceparent(value)).toBeUndefined();
  });

  it('reads the 00 fields of a later version and ignores what follows them', () => {
    expect(parseTraceparent(`cc-${TRACE}-${PARENT}-01-what-the-future-will-be-like`)).toEqual({ version: 0xcc, traceId: TRACE, parentId: PARENT, flags: 1 });
    expect(parseTraceparent(`01-${TRACE}-${PARENT}-09`)?.flags).toBe(9);
  });
});

describe('traceHeaders', () => {
  it('carries a valid trace on under a new parent id, keeping the trace id and the sampled flag', () => {
    const t = traceHeaders(['Host', 'api', 'traceparent', VALID, 'x-request-id', 'r-1']);
    expect(t.incoming).toBe('valid');
    expect(t.traceId).toBe(TRACE);
    expect(t.parentSpanId).toBe(PARENT);
    expect(t.spanId).not.toBe(PARENT);
    expect(t.traceparent).toBe(`00-${TRACE}-${t.spanId}-01`);
    expect(parseTraceparent(t.traceparent)).toBeDefined();
    expect(t.sampled).toBe(true);
    expect(t.add).toEqual(['traceparent', t.traceparent]);
    expect(t.remove).toEqual(['traceparent']);
    // Each request's hop is a span of its own.
    expect(traceHeaders(['traceparent', VALID]).spanId).not.toBe(t.spanId);
  });

  it('clears the flags the spec reserves and upgrades a later version to 00', () => {
    expect(traceHeaders(['traceparent', `00-${TRACE}-${PARENT}-03`]).traceparent).toMatch(new RegExp(`^00-${TRACE}-[0-9a-f]{16}-01$`));
    expect(traceHeaders(['traceparent', `00-${TRACE}-${PARENT}-fe`]).traceparent).toMatch(/-00$/);
    expect(traceHeaders(['traceparent', `cc-${TRACE}-${PARENT}-01-more`]).traceparent).toMatch(new RegExp(`^00-${TRACE}-[0-9a-f]{16}-01$`));
  });

  it('forwards a valid traceparent unchanged when the hop makes no span', () => {
    const t = traceHeaders(['traceparent', VALID, 'tracestate', 'congo=t61rcWkgMzE', 'x-request-id', 'r-1'], { participate: false });
    expect(t).toMatchObject({ traceparent: VALID, traceId: TRACE, spanId: PARENT, parentSpanId: undefined, requestId: 'r-1', incoming: 'valid', add: [], remove: [] });
  });

  it('starts a new unsampled trace when there is none', () => {
    const t = traceHeaders(['host', 'api', 'x-request-id', 'r-1']);
    expect(t.incoming).toBe('absent');
    expect(parseTraceparent(t.traceparent)).toEqual({ version: 0, traceId: t.traceId, parentId: t.spanId, flags: 0 });
    expect(t.parentSpanId).toBeUndefined();
    expect(t.add).toEqual(['traceparent', t.traceparent]);
    expect(t.remove).toEqual([]);
    expect(traceHeaders([]).traceId).not.toBe(t.traceId);
  });

  it('restarts a broken trace and drops its tracestate, but keeps the tracestate of a valid one', () => {
    const bad = traceHeaders(['TraceParent', `00-${'0'.repeat(32)}-${PARENT}-01`, 'tracestate', 'congo=t61rcWkgMzE'], { participate: false });
    expect(bad.incoming).toBe('invalid');
    expect(bad.traceId).not.toBe('0'.repeat(32));
    expect(bad.remove).toEqual(['traceparent', 'tracestate']);
    const good = traceHeaders(['traceparent', VALID, 'tracestate', 'congo=t61rcWkgMzE']);
    expect(good.remove).toEqual(['traceparent']);
  });

  it('treats a repeated traceparent as invalid', () => {
    const t = traceHeaders(['traceparent', VALID, 'traceparent', VALID]);
    expect(t.incoming).toBe('invalid');
    expect(t.traceId).not.toBe(TRACE);
  });

  it('keeps an x-request-id in any case of name, and makes a UUID v4 when it is missing or empty', () => {
    expect(traceHeaders(['X-Request-ID', 'abc-123', 'traceparent', VALID]).requestId).toBe('abc-123');
    const made = traceHeaders(['traceparent', VALID]);
    expect(made.requestId).toMatch(UUID_V4);
    expect(made.add).toEqual(['traceparent', made.traceparent, 'x-request-id', made.requestId]);
    const empty = traceHeaders(['x-request-id', '', 'traceparent', VALID], { participate: false });
    expect(empty.requestId).toMatch(UUID_V4);
    expect(empty.remove).toEqual(['x-request-id']);
  });
});

describe('applyTraceHeaders', () => {
  it('drops the replaced fields, whatever their case, and appends the new ones', () => {
    const h = ['Host', 'api', 'TraceParent', `00-${'0'.repeat(32)}-${PARENT}-01`, 'tracestate', 'a=b', 'accept', '*/*'];
    const t = traceHeaders(h);
    expect(applyTraceHeaders(h, t)).toEqual(['Host', 'api', 'accept', '*/*', 'traceparent', t.traceparent, 'x-request-id', t.requestId]);
  });

  it('returns the same array when nothing changes', () => {
    const h = ['traceparent', VALID, 'x-request-id', 'r-1'];
    expect(applyTraceHeaders(h, traceHeaders(h, { participate: false }))).toBe(h);
  });
});
