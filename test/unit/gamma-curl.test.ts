// The GAMMA runner's judge (test/helpers/gamma-curl.ts): each expectation passes the answer it
// describes and fails the one beside it, so a green privileged run means what it says.
import { describe, expect, it } from 'vitest';
import { CASES, CONSUMER_NS, MESH_NS, type GammaExpect, type GammaRequest } from '../fixtures/gamma/cases.js';
import type { EchoReply } from '../helpers/echo-server.js';
import { check, checkWeights, requestHeaders, requestUrl, type Answer } from '../helpers/gamma-curl.js';

const echo = (pod: string, over: Partial<EchoReply> = {}): EchoReply => ({ namespace: MESH_NS, service: 'echo', pod, ingress: '', path: '/', host: 'echo', method: 'GET', proto: 'HTTP/1.1', headers: {}, httpPort: '8080', ...over });
const answer = (status: number, over: Partial<Answer> = {}): Answer => ({ url: 'http://10.96.40.10:80/', status, error: '', headers: {}, ...over });
const want = (e: Partial<GammaExpect>): GammaExpect => ({ status: [200], ...e });
const request = (test: string, name?: string): GammaRequest => {
  const k = CASES.find((x) => x.test === test)!;
  return name ? k.requests.find((r) => r.name === name)! : k.requests[0]!;
};

describe('gamma runner: requests', () => {
  it('sends to the clusterIP with the authority as Host, a Host header overriding it, and a pod target to its IP with no Host of its own', () => {
    const basic = request('MeshBasic');
    expect(requestUrl(basic, () => 'unused')).toBe('http://10.96.40.10:80/');
    expect(requestHeaders(basic)).toEqual(['Host: echo']);
    const wrongHost = request('MeshFrontendHostname', 'Send to service with wrong hostname');
    expect(requestUrl(wrongHost, () => 'unused')).toBe('http://10.96.40.12:80/');
    expect(requestHeaders(wrongHost)).toEqual(['Host: echo-v1']);
    const pod = request('MeshFrontend', 'Send to pod IP');
    expect(requestUrl(pod, (p) => (p === `${MESH_NS}/echo-v2-7f6b5c9d8-m8n3q` ? '10.244.1.2' : 'wrong'))).toBe('http://10.244.1.2:8080/');
    expect(requestHeaders(pod)).toEqual([]);
  });
});

describe('gamma runner: check', () => {
  it('judges the status and the backend by pod prefix and namespace', () => {
    const e = want({ backend: { podPrefix: 'echo-v1', namespace: MESH_NS } });
    expect(check(e, answer(200, { echo: echo('echo-v1-5d9c7b8f4-x2k4p') }), '')).toEqual([]);
    expect(check(e, answer(200, { echo: echo('echo-v2-7f6b5c9d8-m8n3q') }), '')).toHaveLength(1);
    expect(check(e, answer(200, { echo: echo('echo-v1-6c8d9e7f5-w7r2t', { namespace: CONSUMER_NS }) }), '')).toHaveLength(1);
    expect(check(e, answer(503, { echo: echo('echo-v1-5d9c7b8f4-x2k4p') }), '')).toHaveLength(1);
    expect(check(e, answer(0, { error: 'curl exit 7: refused' }), '')).toEqual(['status 0 (curl exit 7: refused), want one of [200]', 'no echo JSON in the answer']);
  });

  it('compares request fields case-insensitively, repeated lines joined with a comma, and absent ones', () => {
    const e = want({ requestHeaders: { 'X-Header-Add': 'a,b' }, absentRequestHeaders: ['x-header-remove'] });
    expect(check(e, answer(200, { echo: echo('p-1-2', { headers: { 'X-Header-Add': ['a', 'b'] } }) }), '')).toEqual([]);
    expect(check(e, answer(200, { echo: echo('p-1-2', { headers: { 'X-Header-Add': ['a'] } }) }), '')).toHaveLength(1);
    expect(check(e, answer(200, { echo: echo('p-1-2', { headers: { 'X-Header-Add': ['a', 'b'], 'X-Header-Remove': ['v'] } }) }), '')).toHaveLength(1);
  });

  it('reads response fields with Header.Get (the first line) and the path the backend saw', () => {
    const e = want({ responseHeaders: { 'X-Header-Set': 'set' }, absentResponseHeaders: ['X-Other'], path: '/one' });
    const ok = answer(200, { headers: { 'x-header-set': ['set', 'more'] }, echo: echo('p-1-2', { path: '/one' }) });
    expect(check(e, ok, '')).toEqual([]);
    expect(check(e, { ...ok, headers: {} }, '')).toHaveLength(1);
    expect(check(e, { ...ok, headers: { 'x-header-set': ['set'], 'x-other': ['1'] } }, '')).toHaveLength(1);
    expect(check(e, { ...ok, echo: echo('p-1-2', { path: '/prefix/one' }) }, '')).toHaveLength(1);
  });

  it("judges a redirect's scheme, path, named host, and a port that is named or else absent or the scheme's default", () => {
    const at = (location: string) => answer(302, { headers: { location: [location] } });
    const plain = want({ status: [302], redirect: { scheme: 'http', path: '/r' } });
    expect(check(plain, at('http://echo/r'), 'http://10.96.40.10:80/r')).toEqual([]);
    expect(check(plain, at('http://echo:80/r'), '')).toEqual([]);
    expect(check(plain, at('http://echo:8083/r'), '')).toHaveLength(1);
    expect(check(plain, at('https://echo/r'), '')).toHaveLength(1);
    expect(check(plain, at('http://echo/other'), '')).toHaveLength(1);
    expect(check(plain, answer(302), '')).toEqual(['no Location']);
    const named = want({ status: [302], redirect: { scheme: 'https', path: '/r', host: 'example.org', port: '8083' } });
    expect(check(named, at('https://example.org:8083/r'), '')).toEqual([]);
    expect(check(named, at('https://example.org/r'), '')).toHaveLength(1);
    expect(check(named, at('https://echo:8083/r'), '')).toHaveLength(1);
  });
});

describe('gamma runner: checkWeights', () => {
  const e = want({ weights: { share: { 'echo-v1': 0.7, 'echo-v2': 0.3 }, tolerance: 0.05, retries: 10 } });
  const batch = (v1: number, v2: number, other = 0) => [
    ...Array.from({ length: v1 }, () => answer(200, { echo: echo('echo-v1-5d9c7b8f4-x2k4p') })),
    ...Array.from({ length: v2 }, () => answer(200, { echo: echo('echo-v2-7f6b5c9d8-m8n3q') })),
    ...Array.from({ length: other }, () => answer(200, { echo: echo('echo-v3-1-2') })),
  ];

  it('passes a share within the tolerance and fails one outside it, a stranger backend, or a failed answer', () => {
    expect(checkWeights(e, batch(340, 160))).toEqual([]);
    expect(checkWeights(e, batch(250, 250))).toHaveLength(2);
    expect(checkWeights(e, batch(345, 145, 10))).toEqual(['unexpected backend echo-v3 (echo-v1=345 echo-v2=145 echo-v3=10)']);
    expect(checkWeights(e, [...batch(349, 150), answer(503)])).toHaveLength(1);
  });
});
