// Decoding of struct nm_event records (bpf/redirect.h) into KernelEvent: kinds, reasons,
// IPv4 shown dotted (stored v4-mapped), IPv6, cookies and byte counts, and bad batches.
import { describe, expect, it } from 'vitest';
import { decodeEvent, decodeEvents, decodeEventsCfg, encodeEvent, encodeEventsCfg, EVENT_SIZE } from '../../src/redirect/event-layout.js';
import { ipToBytes } from '../../src/net/index.js';

const v4 = (ip: string) => Buffer.from(ip.split('.').map(Number));

describe('kernel event records', () => {
  it('are 80 bytes, as NM_STATIC_ASSERT in bpf/redirect.h says', () => {
    expect(EVENT_SIZE).toBe(80);
    expect(encodeEvent({ kind: 1, src: v4('0.0.0.0'), dst: v4('10.0.0.1'), srcPort: 0, dstPort: 80 }).length).toBe(80);
  });

  it('decodes a redirected IPv4 connect of an enrolled pod, with its cookies and the original destination', () => {
    const ev = decodeEvent(encodeEvent({ kind: 1, flags: 1, src: v4('10.1.0.5'), dst: v4('10.96.0.10'), srcPort: 40000, dstPort: 80, socketCookie: 77n, netnsCookie: 4099n, ts: 123n }));
    expect(ev).toEqual({
      kind: 'connect_redirected',
      socketCookie: 77n,
      netnsCookie: 4099n,
      src: { ip: '10.1.0.5', port: 40000 },
      dst: { ip: '10.96.0.10', port: 80 },
      monotonicNs: 123n,
      enrolled: true,
    });
  });

  it('decodes every reason, and a refused connect as connect_passed with refused', () => {
    const reasons = ['excluded_port', 'excluded_cidr', 'loopback', 'not_enrolled', 'self', 'no_listener', 'ipv6', 'quota', 'observed', 'delivery', 'record_failed', 'assign_failed'];
    reasons.forEach((r, i) => expect(decodeEvent(encodeEvent({ kind: 2, reason: i + 1, src: v4('0.0.0.0'), dst: v4('1.2.3.4'), srcPort: 0, dstPort: 1 }))?.reason).toBe(r));
    const refused = decodeEvent(encodeEvent({ kind: 3, reason: 8, flags: 1, src: v4('0.0.0.0'), dst: v4('10.0.0.9'), srcPort: 0, dstPort: 443 }));
    expect(refused).toMatchObject({ kind: 'connect_passed', reason: 'quota', refused: true });
    const passed = decodeEvent(encodeEvent({ kind: 2, reason: 1, src: v4('0.0.0.0'), dst: v4('10.0.0.9'), srcPort: 0, dstPort: 443 }));
    expect(passed?.refused).toBeUndefined();
  });

  it('decodes IPv6 addresses, and a close with its byte counts; an observed pod is not enrolled', () => {
    const ev = decodeEvent(encodeEvent({ kind: 6, reason: 7, flags: 1, family: 6, src: ipToBytes('fd00::2'), dst: ipToBytes('fd00::1'), srcPort: 5555, dstPort: 8080 }));
    expect(ev).toMatchObject({ kind: 'lookup_dropped', reason: 'ipv6', src: { ip: 'fd00::2', port: 5555 }, dst: { ip: 'fd00::1', port: 8080 } });
    const close = decodeEvent(encodeEvent({ kind: 7, reason: 9, src: v4('10.1.0.7'), dst: v4('10.1.0.8'), srcPort: 1, dstPort: 2, bytesSent: 11n, bytesReceived: 22n }));
    expect(close).toMatchObject({ kind: 'close', reason: 'observed', enrolled: false, bytesSent: 11n, bytesReceived: 22n });
    // Only closes carry byte counts.
    expect(decodeEvent(encodeEvent({ kind: 1, src: v4('0.0.0.0'), dst: v4('1.1.1.1'), srcPort: 0, dstPort: 1, bytesSent: 5n }))?.bytesSent).toBeUndefined();
  });

  it('skips and counts records of a kind it does not know, and refuses a batch of the wrong length', () => {
    const good = encodeEvent({ kind: 4, flags: 1, src: v4('10.0.0.1'), dst: v4('10.0.0.2'), srcPort: 1, dstPort: 2 });
    const unknown = encodeEvent({ kind: 99, src: v4('10.0.0.1'), dst: v4('10.0.0.2'), srcPort: 1, dstPort: 2 });
    const { events, unknown: n } = decodeEvents(Buffer.concat([good, unknown, good]), 3);
    expect(events.map((e) => e.kind)).toEqual(['lookup_steered', 'lookup_steered']);
    expect(n).toBe(1);
    expect(() => decodeEvents(Buffer.concat([good, good]), 3)).toThrow(RangeError);
  });

  it('encodes nm_events_cfg on with its owner, and off as all zero', () => {
    expect(decodeEventsCfg(encodeEventsCfg(true, 4242))).toEqual({ enabled: true, ownerPid: 4242 });
    expect(encodeEventsCfg(false, 4242).equals(Buffer.alloc(8))).toBe(true);
  });
});
