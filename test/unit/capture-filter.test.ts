// Capture filters: each flag parses to what it says (bad values fail naming the flag) and selects
// exactly the records it names: every filter has rows it must pass and rows it must reject.
import { describe, expect, it } from 'vitest';
import { matches, parseDuration, parseFilter, type FilterName } from '../../src/capture/filter.js';
import type { CaptureRecord } from '../../src/capture/record.js';

function rec(p: Partial<CaptureRecord> & Pick<CaptureRecord, 'src' | 'dst'>): CaptureRecord {
  return { v: 1, id: 'n/1', node: 'n', time: new Date().toISOString(), direction: 'outbound', source: 'proxy', protocol: 'tcp', verdict: 'allowed', ...p };
}

const fe = { ip: '10.1.0.3', port: 41000, pod: 'shop/frontend', identity: 'spiffe://cluster.local/ns/shop/sa/frontend' };
const be = { ip: '10.1.0.2', port: 8080, pod: 'shop/backend' };
const db = { ip: '10.2.0.9', port: 5432, pod: 'data/postgres' };
const outside = { ip: '192.168.7.7', port: 443 };

const R = {
  feToBe: rec({ src: fe, dst: be }),
  feToDb: rec({ src: fe, dst: db, verdict: 'denied', policy: 'data/deny-shop' }),
  beToOutside: rec({ src: { ...be, port: 50000 }, dst: outside, verdict: 'passed', reason: 'excluded_cidr', direction: 'kernel', source: 'kernel' }),
  viaVip: rec({ src: fe, dst: be, originalDst: '10.96.0.10:80' }),
  dropped: rec({ src: { ip: '10.9.9.9', port: 1234 }, dst: be, verdict: 'dropped', reason: 'no_listener', direction: 'kernel', source: 'kernel' }),
  http: rec({ src: fe, dst: be, protocol: 'http', l7: { method: 'GET', path: '/', authority: 'be', status: 200, protocol: 'HTTP/1.1' } }),
};
type Name = keyof typeof R;

/** filter values → the records it must select; every other record must be rejected. */
const TABLE: Array<[Partial<Record<FilterName, string>>, Name[]]> = [
  [{}, ['feToBe', 'feToDb', 'beToOutside', 'viaVip', 'dropped', 'http']],
  [{ pod: 'shop/backend' }, ['feToBe', 'beToOutside', 'viaVip', 'dropped', 'http']],
  [{ pod: 'data/postgres' }, ['feToDb']],
  [{ namespace: 'data' }, ['feToDb']],
  [{ namespace: 'shop' }, ['feToBe', 'feToDb', 'beToOutside', 'viaVip', 'dropped', 'http']],
  [{ from: 'shop/frontend' }, ['feToBe', 'feToDb', 'viaVip', 'http']],
  [{ from: '10.9.9.9' }, ['dropped']],
  [{ from: '10.1.0.0/24' }, ['feToBe', 'feToDb', 'beToOutside', 'viaVip', 'http']],
  [{ to: 'data/postgres' }, ['feToDb']],
  [{ to: '192.168.0.0/16' }, ['beToOutside']],
  [{ to: '10.96.0.10' }, ['viaVip']],
  [{ port: '5432' }, ['feToDb']],
  [{ port: '80' }, ['viaVip']],
  [{ verdict: 'denied' }, ['feToDb']],
  [{ verdict: 'dropped' }, ['dropped']],
  [{ verdict: 'dropped,passed' }, ['beToOutside', 'dropped']],
  [{ protocol: 'http' }, ['http']],
  [{ protocol: 'tcp' }, ['feToBe', 'feToDb', 'beToOutside', 'viaVip', 'dropped']],
  [{ from: 'shop/frontend', to: '10.1.0.2', port: '8080', protocol: 'tcp' }, ['feToBe', 'viaVip']],
  [{ namespace: 'shop', verdict: 'allowed', to: '10.2.0.0/16' }, []],
];

describe('capture filters', () => {
  for (const [values, want] of TABLE) {
    it(`${JSON.stringify(values)} selects exactly ${want.join(', ') || 'nothing'}`, () => {
      const f = parseFilter(values);
      const got = (Object.keys(R) as Name[]).filter((n) => matches(f, R[n]));
      expect(got).toEqual(want);
    });
  }

  it('rejects bad values with NM_ERR_USAGE and a message naming the flag', () => {
    const bad: Array<[FilterName, string]> = [
      ['pod', 'backend'],
      ['pod', 'a/b/c'],
      ['namespace', 'Shop!'],
      ['from', 'nothing'],
      ['to', '10.0.0.0/40'],
      ['port', '0'],
      ['port', '70000'],
      ['port', 'http'],
      ['verdict', 'denied,maybe'],
      ['protocol', 'udp'],
      ['since', '5 minutes'],
      ['since', '10'],
    ];
    for (const [k, v] of bad) {
      let err: { code?: string; message?: string } | undefined;
      try {
        parseFilter({ [k]: v });
      } catch (e) {
        err = e as typeof err;
      }
      expect(err?.code, `${k}=${v}`).toBe('NM_ERR_USAGE');
      expect(err?.message).toContain(`--${k}`);
    }
    // The twins: good values of the same flags parse.
    expect(parseFilter({ pod: 'shop/backend', namespace: 'shop', from: '10.0.0.1', to: '10.0.0.0/8', port: '1', verdict: 'observed', protocol: 'http', since: '1h30m' })).toMatchObject({ port: 1, protocol: 'http', sinceMs: 5_400_000 });
  });

  it('parses durations', () => {
    expect(parseDuration('since', '500ms')).toBe(500);
    expect(parseDuration('since', '90s')).toBe(90_000);
    expect(parseDuration('since', '2h')).toBe(7_200_000);
  });
});
