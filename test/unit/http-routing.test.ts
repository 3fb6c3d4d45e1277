// Route selection and matching of src/proxy/http: consumer vs producer tables, every path,
// header, query and method match type with its edge cases, and first-match-wins order.
import { describe, expect, it } from 'vitest';
import { HttpRequestHead } from '../../src/l7/types.js';
import { fullMatchRegex, matchRoute, noRouteResponse, parseQuery, selectTable } from '../../src/proxy/http/index.js';
import type { HttpMatch, RouteTable, ServiceRoutes } from '../../src/state/routes.js';

function req(path: string, headers: string[] = [], method = 'GET', authority = 'svc.ns:8080'): HttpRequestHead {
  return new HttpRequestHead(method, path, authority, headers, 'HTTP/1.1');
}

function match(m: Partial<HttpMatch>): HttpMatch {
  return { headers: [], queryParams: [], ...m };
}

/** A table of one entry per match, rule i for match i. */
function table(...ms: HttpMatch[]): RouteTable {
  return { port: 80, entries: ms.map((m, i) => ({ match: m, rule: i, hostnames: [] })) };
}

function hits(t: RouteTable, r: HttpRequestHead): number | undefined {
  return matchRoute(t, r)?.rule;
}

describe('table selection', () => {
  const sr: ServiceRoutes = {
    service: 'prod/api.prod.svc.cluster.local',
    rules: [],
    subsets: [],
    tables: [
      { port: 80, entries: [] },
      { port: 80, consumerNamespace: 'team-a', entries: [] },
      { port: 9090, entries: [] },
      { port: 0, consumerNamespace: 'team-b', entries: [] },
    ],
  };

  it('gives a client in a consumer namespace its own table, replacing the producer one', () => {
    expect(selectTable(sr, 80, 'team-a')).toBe(sr.tables[1]);
    expect(selectTable(sr, 80, 'elsewhere')).toBe(sr.tables[0]);
  });

  it('goes by port, with a port-0 table for every port after an exact one', () => {
    expect(selectTable(sr, 9090, 'team-a')).toBe(sr.tables[2]);
    expect(selectTable(sr, 80, 'team-b')).toBe(sr.tables[3]);
    expect(selectTable(sr, 81, 'team-b')).toBe(sr.tables[3]);
  });

  it('has no table (the default backend) without routes or for a port with none', () => {
    expect(selectTable(undefined, 80, 'team-a')).toBeUndefined();
    expect(selectTable(sr, 81, 'team-a')).toBeUndefined();
  });

  it('answers 404 NR when a table matches nothing', () => {
    expect(noRouteResponse()).toEqual({ respond: { status: 404, responseFlags: 'NR' } });
  });
});

describe('path matching', () => {
  it('PathPrefix matches whole segments only', () => {
    const t = table(match({ path: { type: 'PathPrefix', value: '/foo' } }));
    for (const p of ['/foo', '/foo/', '/foo/bar', '/foo?x=1', '/foo/bar?x=/']) expect(hits(t, req(p)), p).toBe(0);
    for (const p of ['/foobar', '/fo', '/', '/bar/foo', '/foobar?/foo']) expect(hits(t, req(p)), p).toBeUndefined();
  });

  it('PathPrefix ignores a trailing slash in the value, and / matches everything', () => {
    const slash = table(match({ path: { type: 'PathPrefix', value: '/foo/' } }));
    expect(hits(slash, req('/foo'))).toBe(0);
    expect(hits(slash, req('/foo/bar'))).toBe(0);
    expect(hits(slash, req('/foobar'))).toBeUndefined();
    const root = table(match({ path: { type: 'PathPrefix', value: '/' } }));
    expect(hits(root, req('/'))).toBe(0);
    expect(hits(root, req('/anything/at/all'))).toBe(0);
    expect(matchRoute(slash, req('/foo/x'))?.prefixMatched).toBe('/foo');
    expect(matchRoute(root, req('/x'))?.prefixMatched).toBe('');
  });

  it('Prefix (VirtualService) is a plain string prefix', () => {
    const t = table(match({ path: { type: 'Prefix', value: '/foo' } }));
    expect(hits(t, req('/foobar'))).toBe(0);
    expect(hits(t, req('/foo'))).toBe(0);
    expect(hits(t, req('/fo'))).toBeUndefined();
    expect(matchRoute(t, req('/foobar'))?.prefixMatched).toBe('/foo');
  });

  it('Exact compares the path without its query string', () => {
    const t = table(match({ path: { type: 'Exact', value: '/a/b' } }));
    expect(hits(t, req('/a/b'))).toBe(0);
    expect(hits(t, req('/a/b?q=1'))).toBe(0);
    expect(hits(t, req('/a/b/'))).toBeUndefined();
    expect(hits(t, req('/a'))).toBeUndefined();
  });

  it('RegularExpression is a full match: anchored at both ends, path only', () => {
    const t = table(match({ path: { type: 'RegularExpression', value: '/v[0-9]+/items' } }));
    expect(hits(t, req('/v2/items'))).toBe(0);
    expect(hits(t, req('/v2/items?x=y'))).toBe(0);
    expect(hits(t, req('/x/v2/items'))).toBeUndefined();
    expect(hits(t, req('/v2/items/1'))).toBeUndefined();
    const alt = table(match({ path: { type: 'RegularExpression', value: '/a|/b' } }));
    // Without the group around the alternation, `^/a|/b$` would take `/a/anything`.
    expect(hits(alt, req('/a/anything'))).toBeUndefined();
    expect(hits(alt, req('/b'))).toBe(0);
  });

  it('a regex RE2 rejects (backreference, lookahead) matches nothing, whatever the rest says', () => {
    const t = table(match({ path: { type: 'RegularExpression', value: '/(a)\\1' } }), match({ headers: [{ name: 'x', type: 'RegularExpression', value: '(?=a)a', invert: true }] }), match({}));
    expect(hits(t, req('/aa'))).toBe(2);
    expect(fullMatchRegex('/(a)\\1')).toBeNull();
    expect(fullMatchRegex('(?!x).*')).toBeNull();
  });
});

describe('RE2 translation', () => {
  it('honours a leading (?i), RE2 named groups, POSIX classes, \\Q..\\E and a literal ] first in a class', () => {
    expect(fullMatchRegex('(?i)/api')!.test('/API')).toBe(true);
    expect(fullMatchRegex('/api')!.test('/API')).toBe(false);
    expect(fullMatchRegex('/(?P<id>[0-9]+)')!.exec('/42')?.groups?.id).toBe('42');
    expect(fullMatchRegex('[[:digit:]]+')!.test('123')).toBe(true);
    expect(fullMatchRegex('[[:digit:]]+')!.test('12a')).toBe(false);
    expect(fullMatchRegex('\\Q/a.b\\E')!.test('/a.b')).toBe(true);
    expect(fullMatchRegex('\\Q/a.b\\E')!.test('/axb')).toBe(false);
    expect(fullMatchRegex('[]a]+')!.test(']a]')).toBe(true);
    expect(fullMatchRegex('\\pL+')!.test('héllo')).toBe(true);
    expect(fullMatchRegex('\\pL+')!.test('h3llo')).toBe(false);
  });

  it('compiles each pattern once', () => {
    expect(fullMatchRegex('/cached/[a-z]+')).toBe(fullMatchRegex('/cached/[a-z]+'));
  });
});

describe('header, query and method matching', () => {
  it('compares header names case-insensitively, values exactly', () => {
    const t = table(match({ headers: [{ name: 'X-Env', type: 'Exact', value: 'canary' }] }));
    expect(hits(t, req('/', ['x-env', 'canary']))).toBe(0);
    expect(hits(t, req('/', ['X-ENV', 'canary']))).toBe(0);
    expect(hits(t, req('/', ['x-env', 'Canary']))).toBeUndefined();
    expect(hits(t, req('/', []))).toBeUndefined();
  });

  it('sees repeated fields joined with a comma, as Envoy does', () => {
    const exact = table(match({ headers: [{ name: 'x-v', type: 'Exact', value: 'a,b' }] }));
    expect(hits(exact, req('/', ['x-v', 'a', 'X-V', 'b']))).toBe(0);
    expect(hits(exact, req('/', ['x-v', 'a']))).toBeUndefined();
    const re = table(match({ headers: [{ name: 'x-v', type: 'RegularExpression', value: '.*\\bb\\b.*' }] }));
    expect(hits(re, req('/', ['x-v', 'a', 'x-v', 'b']))).toBe(0);
  });

  it('supports Prefix, RegularExpression and Present on headers', () => {
    const t = table(
      match({ headers: [{ name: 'user-agent', type: 'Prefix', value: 'curl/' }] }),
      match({ headers: [{ name: 'x-id', type: 'RegularExpression', value: '[0-9]{3}' }] }),
      match({ headers: [{ name: 'x-debug', type: 'Present', value: '' }] }),
    );
    expect(hits(t, req('/', ['User-Agent', 'curl/8.0']))).toBe(0);
    expect(hits(t, req('/', ['x-id', '123']))).toBe(1);
    expect(hits(t, req('/', ['x-id', '1234']))).toBeUndefined();
    expect(hits(t, req('/', ['x-debug', '']))).toBe(2);
    expect(hits(t, req('/', ['x-other', '1']))).toBeUndefined();
  });

  it('inverts a header match (withoutHeaders): an absent header matches', () => {
    const t = table(match({ headers: [{ name: 'x-env', type: 'Exact', value: 'canary', invert: true }] }));
    expect(hits(t, req('/', ['x-env', 'canary']))).toBeUndefined();
    expect(hits(t, req('/', ['x-env', 'prod']))).toBe(0);
    expect(hits(t, req('/', []))).toBe(0);
  });

  it('matches :authority and Host against the request authority', () => {
    const t = table(match({ headers: [{ name: ':authority', type: 'Prefix', value: 'api.' }] }), match({ headers: [{ name: 'Host', type: 'Exact', value: 'web:80' }] }));
    expect(hits(t, req('/', [], 'GET', 'api.example'))).toBe(0);
    expect(hits(t, req('/', [], 'GET', 'web:80'))).toBe(1);
    expect(hits(t, req('/', [], 'GET', 'other'))).toBeUndefined();
  });

  it('matches query parameters by exact name, first value, decoded, AND-ed', () => {
    const t = table(
      match({
        queryParams: [
          { name: 'v', type: 'Exact', value: 'two words' },
          { name: 'mode', type: 'RegularExpression', value: 'fast|slow' },
        ],
      }),
    );
    expect(hits(t, req('/p?v=two%20words&mode=fast'))).toBe(0);
    expect(hits(t, req('/p?mode=slow&v=two%20words&v=other'))).toBe(0);
    expect(hits(t, req('/p?v=other&v=two%20words&mode=fast'))).toBeUndefined();
    expect(hits(t, req('/p?V=two%20words&mode=fast'))).toBeUndefined();
    expect(hits(t, req('/p?v=two%20words'))).toBeUndefined();
    expect(hits(t, req('/p'))).toBeUndefined();
  });

  it('parses a query string leniently', () => {
    const q = parseQuery('a=1&a=2&b&&c=%zz&d=x%3Dy&e=a+b');
    expect([...q]).toEqual([
      ['a', '1'],
      ['b', ''],
      ['c', '%zz'],
      ['d', 'x=y'],
      ['e', 'a+b'],
    ]);
  });

  it('matches the method', () => {
    const t = table(match({ method: 'POST' }));
    expect(hits(t, req('/', [], 'POST'))).toBe(0);
    expect(hits(t, req('/', [], 'GET'))).toBeUndefined();
  });

  it('needs every field of a match (AND) and an empty match takes everything', () => {
    const t = table(match({ method: 'GET', path: { type: 'PathPrefix', value: '/api' }, headers: [{ name: 'x-a', type: 'Present', value: '' }] }), match({}));
    expect(hits(t, req('/api/x', ['x-a', '1']))).toBe(0);
    expect(hits(t, req('/api/x', []))).toBe(1);
    expect(hits(t, req('/other', ['x-a', '1']))).toBe(1);
  });
});

describe('precedence', () => {
  it('is the table order: the first matching entry wins, even when a later one is more specific', () => {
    const t = table(match({ path: { type: 'PathPrefix', value: '/' } }), match({ path: { type: 'Exact', value: '/exact' } }));
    expect(hits(t, req('/exact'))).toBe(0);
    const reversed: RouteTable = { port: 80, entries: [...t.entries].reverse() };
    expect(hits(reversed, req('/exact'))).toBe(1);
    expect(hits(reversed, req('/other'))).toBe(0);
  });

  it('ORs the matches of one rule: several entries may name the same rule', () => {
    const t: RouteTable = {
      port: 80,
      entries: [
        { match: match({ path: { type: 'Exact', value: '/a' } }), rule: 3, hostnames: [] },
        { match: match({ path: { type: 'Exact', value: '/b' } }), rule: 3, hostnames: [] },
      ],
    };
    expect(hits(t, req('/a'))).toBe(3);
    expect(hits(t, req('/b'))).toBe(3);
    expect(matchRoute(t, req('/b'))?.entry).toBe(t.entries[1]);
    expect(hits(t, req('/c'))).toBeUndefined();
  });
});
