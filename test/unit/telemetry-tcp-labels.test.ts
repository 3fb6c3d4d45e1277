// The TCP label sets the proxy counts under: one shared object per pair of peers, the same
// labels tcpLabels builds, a changed workload label reflected at once, and a bounded cache.
import { describe, expect, it } from 'vitest';
import { TcpLabelCache, type PeerInfo } from '../../src/telemetry/index.js';
import { tcpLabels } from '../../src/telemetry/labels.js';

const web: PeerInfo = { workload: 'web', namespace: 'shop', principal: 'cluster.local/ns/shop/sa/web', app: 'web', version: 'v1' };
const api: PeerInfo = { workload: 'api', namespace: 'shop', principal: 'cluster.local/ns/shop/sa/api', app: 'api', version: 'v2', canonicalService: 'api', canonicalRevision: 'v2' };

let port = 40000;

/** What the proxy hands over: fresh peer objects for every connection, with their addresses. */
function input(over: { source?: PeerInfo; destination?: PeerInfo; responseFlags?: string } = {}) {
  return {
    reporter: 'source' as const,
    source: { ...(over.source ?? web), ip: '10.0.0.1', port: port++ },
    destination: { ...(over.destination ?? api), ip: '10.0.0.2', port: 8080 },
    destinationService: 'api.shop.svc.cluster.local',
    destinationServiceName: 'api',
    destinationServiceNamespace: 'shop',
    securityPolicy: 'mutual_tls' as const,
    responseFlags: over.responseFlags ?? '-',
  };
}

describe('TcpLabelCache', () => {
  it('gives connections between the same peers one frozen object with the labels tcpLabels builds', () => {
    const c = new TcpLabelCache();
    const a = c.get(input());
    const b = c.get(input());
    expect(b).toBe(a);
    expect(a).toEqual(tcpLabels(input()));
    expect(Object.isFrozen(a)).toBe(true);
    expect(c.size).toBe(1);
  });

  it('gives a workload whose labels changed its new labels at once, and the old set to the old labels', () => {
    const c = new TcpLabelCache();
    const before = c.get(input());
    const after = c.get(input({ destination: { ...api, version: 'v3', canonicalRevision: 'v3' } }));
    expect(after).not.toBe(before);
    expect(after.destination_version).toBe('v3');
    expect(after.destination_canonical_revision).toBe('v3');
    expect(before.destination_version).toBe('v2');
    expect(c.get(input())).toBe(before);
  });

  it('keeps apart what differs only in the response flags, the reporter or an absent field', () => {
    const c = new TcpLabelCache();
    const plain = c.get(input());
    expect(c.get(input({ responseFlags: 'DENY' })).response_flags).toBe('DENY');
    expect(c.get({ ...input(), reporter: 'destination' }).reporter).toBe('destination');
    // An absent workload is 'unknown'; a workload named 'undefined' or '' is itself.
    const { workload: _, ...anonymous } = web;
    expect(c.get(input({ source: anonymous })).source_workload).toBe('unknown');
    expect(c.get(input({ source: { ...web, workload: 'undefined' } })).source_workload).toBe('undefined');
    expect(c.get(input({ source: { ...web, workload: '' } })).source_workload).toBe('');
    expect(c.get(input())).toBe(plain);
  });

  it('holds at most maxEntries sets, dropping the oldest first', () => {
    const c = new TcpLabelCache(3);
    const peer = (i: number) => ({ ...web, workload: `web-${i}` });
    const first = c.get(input({ source: peer(0) }));
    for (let i = 1; i < 10; i++) c.get(input({ source: peer(i) }));
    expect(c.size).toBe(3);
    // The newest are still shared; the first was dropped and is made again, with the same labels.
    expect(c.get(input({ source: peer(9) }))).toBe(c.get(input({ source: peer(9) })));
    const again = c.get(input({ source: peer(0) }));
    expect(again).not.toBe(first);
    expect(again).toEqual(first);
    expect(c.size).toBe(3);
  });

  it('refuses a size that is not a positive integer', () => {
    expect(() => new TcpLabelCache(0)).toThrow(RangeError);
    expect(() => new TcpLabelCache(1.5)).toThrow(RangeError);
  });
});
