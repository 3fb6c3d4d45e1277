// Flow records: the bounded ring behind /debug/flows (the last N, oldest first, open ones
// included), the start time of each record, and the access log line written when one finishes.
import { pino } from 'pino';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { FlowLog, type FlowRecord } from '../../src/telemetry/index.js';

function flows(capacity?: number) {
  const lines: Array<Record<string, unknown>> = [];
  const log = pino({ level: 'info' }, { write: (s: string) => void lines.push(JSON.parse(s) as Record<string, unknown>) });
  return { flows: new FlowLog(log, capacity), lines };
}

function start(f: FlowLog, port: number): FlowRecord {
  return f.start({
    direction: 'outbound',
    pod: 'shop/web',
    src: { ip: '10.0.0.1', port, workload: 'web', namespace: 'shop' },
    dst: { ip: '10.0.0.2', port: 8080 },
    originalDst: '10.0.0.2:8080',
    upstream: '10.0.0.2:8080',
  });
}

afterEach(() => {
  vi.useRealTimers();
});

describe('FlowLog', () => {
  it('keeps the last `capacity` records, oldest first, as they wrap around', () => {
    const { flows: f } = flows(5);
    const model: FlowRecord[] = [];
    for (let i = 0; i < 23; i++) {
      const r = start(f, 1000 + i);
      model.push(r);
      if (i % 3 === 0) f.finish(r, performance.now());
      const last = model.slice(-5);
      expect(f.recent()).toEqual(last);
      expect(f.recent(2)).toEqual(last.slice(-2));
      expect(f.open()).toEqual(last.filter((x) => x.open));
    }
    expect(f.recent().map((r) => r.id)).toEqual([19, 20, 21, 22, 23]);
    // As Array.prototype.slice(-limit): 0 (or a limit that is not a number) means all of them.
    expect(f.recent(0)).toHaveLength(5);
    expect(f.recent(Number.NaN)).toHaveLength(5);
    expect(f.recent(50)).toHaveLength(5);
  });

  it('stamps each record with the time it started', () => {
    vi.useFakeTimers({ now: new Date('2026-03-01T10:00:00.000Z') });
    const { flows: f } = flows();
    expect(start(f, 1).startedAt).toBe('2026-03-01T10:00:00.000Z');
    expect(start(f, 2).startedAt).toBe('2026-03-01T10:00:00.000Z');
    vi.advanceTimersByTime(1);
    expect(start(f, 3).startedAt).toBe('2026-03-01T10:00:00.001Z');
    vi.setSystemTime(new Date('2026-03-01T11:30:00.250Z'));
    expect(start(f, 4).startedAt).toBe('2026-03-01T11:30:00.250Z');
  });

  it('writes one access log line per finished record, and tells its listeners', () => {
    const { flows: f, lines } = flows();
    const heard: FlowRecord[] = [];
    f.onFinish((r) => heard.push(r));
    const r = start(f, 4321);
    r.bytesSent = 78;
    r.bytesReceived = 1257;
    r.responseFlags = 'UC';
    r.error = 'upstream: ECONNRESET';
    expect(lines).toEqual([]);
    f.finish(r, performance.now());
    expect(heard).toEqual([r]);
    expect(r.open).toBe(false);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatchObject({
      component: 'access',
      msg: 'connection complete',
      direction: 'outbound',
      pod: 'shop/web',
      src: { ip: '10.0.0.1', port: 4321, workload: 'web', namespace: 'shop' },
      dst: { ip: '10.0.0.2', port: 8080 },
      original_dst: '10.0.0.2:8080',
      upstream: '10.0.0.2:8080',
      bytes_sent: 78,
      bytes_received: 1257,
      response_flags: 'UC',
      error: 'upstream: ECONNRESET',
    });
  });

  it('refuses a capacity that is not a positive integer', () => {
    const log = pino({ level: 'silent' });
    expect(() => new FlowLog(log, 0)).toThrow(RangeError);
    expect(() => new FlowLog(log, 2.5)).toThrow(RangeError);
  });
});
