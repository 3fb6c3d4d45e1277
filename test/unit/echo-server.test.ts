// The echo backend of the GAMMA cases (test/helpers/echo-server.ts) on loopback: its JSON over
// HTTP/1.1 and h2c on one port, its controls, its command line; and the GAMMA fixtures it serves
// (test/fixtures/gamma/) as the control plane would load them.
import { request as httpRequest, type OutgoingHttpHeaders } from 'node:http';
import { connect as h2connect } from 'node:http2';
import { connect } from 'node:net';
import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { canonicalHeaderName, parseGoDuration, startEchoServer, type EchoReply, type EchoServer } from '../helpers/echo-server.js';
import { ECHO_HELP, parseEchoArgs, runEcho } from '../helpers/echo-server-main.js';
import { loadSnapshot } from '../../src/controlplane/sources.js';
import { backendName, CASES, CONSUMER_NS, FIXTURE_DIR, MESH_NS, NODES, PODS, SERVICES, writeGammaConfig, type GammaCase } from '../fixtures/gamma/cases.js';

interface Got {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

/** One HTTP/1.1 request; `headers` as a flat name/value list, so a name may repeat (node:http then adds no Host: a default one is put first). */
function get(port: number, path: string, o: { method?: string; headers?: string[]; body?: string } = {}): Promise<Got> {
  const given = o.headers ?? [];
  const headers = given.some((h, i) => i % 2 === 0 && h.toLowerCase() === 'host') ? given : ['Host', 'echo', ...given];
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: '127.0.0.1', port, path, method: o.method ?? 'GET', headers: headers as unknown as OutgoingHttpHeaders, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
    });
    req.on('error', reject);
    req.end(o.body);
  });
}

const json = (g: Got): EchoReply => JSON.parse(g.body) as EchoReply;

/** One HTTP/2 request with prior knowledge: status and body, or the stream's error code. */
function h2get(port: number, path: string, headers: Record<string, string> = {}): Promise<{ status: number; body: string } | { rstCode: number }> {
  return new Promise((resolve, reject) => {
    const s = h2connect(`http://127.0.0.1:${port}`);
    s.on('error', reject);
    const st = s.request({ ':path': path, ':authority': 'echo-v1.ns:80', ...headers });
    let status = 0;
    let body = '';
    st.on('response', (h) => (status = Number(h[':status'])));
    st.setEncoding('utf8');
    st.on('data', (d: string) => (body += d));
    st.on('close', () => {
      s.close();
      resolve(st.rstCode && status === 0 ? { rstCode: st.rstCode } : { status, body });
    });
    st.on('error', () => {});
    st.end();
  });
}

describe('the echo server', () => {
  let echo: EchoServer;
  beforeEach(async () => {
    echo = await startEchoServer({ ports: [0, 0], host: '127.0.0.1', context: { namespace: 'ns', service: 'echo-v1', pod: 'echo-v1-abc-123', ingress: '' } });
  });
  afterEach(() => echo.close());

  it('answers with what arrived and who answered, on each of its ports', async () => {
    for (const port of echo.ports) {
      const g = await get(port, '/some/path?x=1', { headers: ['Host', 'echo', 'x-header-add', 'one', 'X-Header-Add', 'two', 'some-thing', 'a, b'] });
      expect(g.status).toBe(200);
      expect(g.headers['content-type']).toBe('application/json');
      expect(json(g)).toEqual({
        path: '/some/path?x=1',
        host: 'echo',
        method: 'GET',
        proto: 'HTTP/1.1',
        headers: { 'X-Header-Add': ['one', 'two'], 'Some-Thing': ['a, b'], Connection: ['close'] },
        httpPort: String(port),
        namespace: 'ns',
        ingress: '',
        service: 'echo-v1',
        pod: 'echo-v1-abc-123',
      });
    }
  });

  it('reads a request body and reports the method; HEAD gets no body', async () => {
    expect(json(await get(echo.ports[0]!, '/post', { method: 'POST', body: 'x'.repeat(100_000) })).method).toBe('POST');
    const head = await get(echo.ports[0]!, '/', { method: 'HEAD' });
    expect(head.status).toBe(200);
    expect(head.body).toBe('');
  });

  it('speaks h2c with prior knowledge on the same port, :authority as host', async () => {
    const r = await h2get(echo.ports[0]!, '/h2?y', { 'x-header-set': 'v' });
    expect('status' in r && r.status).toBe(200);
    const body = JSON.parse((r as { body: string }).body) as EchoReply;
    expect(body).toMatchObject({ path: '/h2?y', host: 'echo-v1.ns:80', proto: 'HTTP/2.0', pod: 'echo-v1-abc-123', httpPort: String(echo.ports[0]) });
    expect(body.headers).toEqual({ 'X-Header-Set': ['v'] });
  });

  it('keeps an HTTP/1.1 connection alive across requests', async () => {
    const s = connect({ host: '127.0.0.1', port: echo.ports[0]! });
    let got = '';
    s.on('data', (d: Buffer) => (got += d.toString()));
    s.write('GET /a HTTP/1.1\r\nHost: h\r\n\r\nGET /b HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n');
    await new Promise((r) => s.on('close', r));
    expect([...got.matchAll(/"path": "(\/[ab])"/g)].map((m) => m[1])).toEqual(['/a', '/b']);
  });

  it('answers /status/<code> with that code and 400 for codes out of range', async () => {
    const g = await get(echo.ports[0]!, '/status/503');
    expect(g.status).toBe(503);
    expect(json(g).pod).toBe('echo-v1-abc-123');
    expect((await get(echo.ports[0]!, '/status/418?k=v')).status).toBe(418);
    expect((await get(echo.ports[0]!, '/status/99')).status).toBe(400);
    expect((await get(echo.ports[0]!, '/status/1000')).status).toBe(400);
    expect(await get(echo.ports[0]!, '/health')).toMatchObject({ status: 200, body: 'OK' });
  });

  it('holds /delay/<ms> back: an answer sent later overtakes it', async () => {
    const order: string[] = [];
    const slow = get(echo.ports[0]!, '/delay/1000/x').then((g) => order.push(json(g).path));
    await get(echo.ports[0]!, '/now').then((g) => order.push(json(g).path));
    await slow;
    expect(order).toEqual(['/now', '/delay/1000/x']);
    expect(json(await get(echo.ports[0]!, '/?delay=10ms')).path).toBe('/?delay=10ms');
    expect((await get(echo.ports[0]!, '/?delay=soon')).status).toBe(500);
  });

  it('fails the first n requests of a /flaky/<n> key, then echoes with the attempt', async () => {
    const p = echo.ports[0]!;
    expect((await get(p, '/flaky/2?key=a')).status).toBe(503);
    expect((await get(echo.ports[1]!, '/flaky/2?key=a')).status).toBe(503);
    const third = await get(p, '/flaky/2?key=a');
    expect(third.status).toBe(200);
    expect(json(third).attempt).toBe(3);
    // Another key counts on its own; the code is chosen per request; the header names a key too.
    expect((await get(p, '/flaky/1?key=b&code=500')).status).toBe(500);
    expect((await get(p, '/flaky/1?key=b&code=500')).status).toBe(200);
    expect((await get(p, '/flaky/1/x', { headers: ['X-Echo-Key', 'k'] })).status).toBe(503);
    expect((await get(p, '/flaky/1/y', { headers: ['X-Echo-Key', 'k'] })).status).toBe(200);
    // Without a key the path is the key.
    expect((await get(p, '/flaky/1/z')).status).toBe(503);
    expect((await get(p, '/flaky/1/z')).status).toBe(200);
  });

  it('resets the connection for /flaky/<n>?mode=reset, over HTTP/1.1 and HTTP/2', async () => {
    const p = echo.ports[0]!;
    await expect(get(p, '/flaky/1?key=r&mode=reset')).rejects.toMatchObject({ code: 'ECONNRESET' });
    expect((await get(p, '/flaky/1?key=r&mode=reset')).status).toBe(200);
    const r = await h2get(p, '/flaky/1?key=r2&mode=reset');
    expect(r).toEqual({ rstCode: 2 });
    expect(await h2get(p, '/flaky/1?key=r2&mode=reset')).toMatchObject({ status: 200 });
  });

  it('simulates retries as echo-basic does on /retry/', async () => {
    const p = echo.ports[0]!;
    expect((await get(p, '/retry/?uuid=u1&succeedAfter=1&responseCode=502')).status).toBe(502);
    const ok = await get(p, '/retry/?uuid=u1&succeedAfter=1&responseCode=502');
    expect(ok.status).toBe(200);
    expect(json(ok).attempt).toBe(2);
    await expect(get(p, '/retry/?uuid=u2&succeedAfter=1')).rejects.toMatchObject({ code: 'ECONNRESET' });
    expect((await get(p, '/retry/?uuid=u2&succeedAfter=1')).status).toBe(200);
    expect((await get(p, '/retry/?succeedAfter=1')).status).toBe(400);
  });

  it('sets the response headers X-Echo-Set-Header asks for, and only those', async () => {
    const g = await get(echo.ports[0]!, '/', { headers: ['X-Echo-Set-Header', 'X-Foo: bar, X-Baz:1', 'X-Echo-Set-Header', 'X-Foo:again'] });
    expect(g.headers['x-foo']).toBe('bar,again');
    expect(g.headers['x-baz']).toBe('1');
    expect((await get(echo.ports[0]!, '/')).headers['x-foo']).toBeUndefined();
  });

  it('stops listening on close', async () => {
    const port = echo.ports[0]!;
    await echo.close();
    await expect(get(port, '/')).rejects.toMatchObject({ code: 'ECONNREFUSED' });
    echo = await startEchoServer({ ports: [0], host: '127.0.0.1', context: { namespace: '', service: '', pod: '', ingress: '' } });
  });
});

describe('the echo server helpers', () => {
  it('canonicalizes header names as Go does', () => {
    expect(canonicalHeaderName('x-header-set')).toBe('X-Header-Set');
    expect(canonicalHeaderName('CONTENT-type')).toBe('Content-Type');
    expect(canonicalHeaderName('we ird')).toBe('we ird');
  });

  it('parses Go durations and refuses what is not one', () => {
    expect(parseGoDuration('1s')).toBe(1000);
    expect(parseGoDuration('1m30s')).toBe(90_000);
    expect(parseGoDuration('250ms')).toBe(250);
    expect(parseGoDuration('1.5s')).toBe(1500);
    expect(parseGoDuration('0')).toBe(0);
    for (const bad of ['', '10', 's', '1x', '1s junk']) expect(parseGoDuration(bad)).toBeUndefined();
  });
});

describe('the echo server program', () => {
  it('takes its ports and context from the command line, else from echo-basic variables', () => {
    expect(parseEchoArgs(['--port', '8080', '--port', '9090,7070', '--pod', 'p', '--namespace', 'n', '--service', 's'], {})).toEqual({
      help: false,
      options: { ports: [8080, 9090, 7070], context: { namespace: 'n', service: 's', pod: 'p', ingress: '' } },
    });
    expect(parseEchoArgs([], { HTTP_PORT: '3001', NAMESPACE: 'n2', SERVICE_NAME: 's2', HOSTNAME: 'host-pod', INGRESS_NAME: 'i' })).toEqual({
      help: false,
      options: { ports: [3001], context: { namespace: 'n2', service: 's2', pod: 'host-pod', ingress: 'i' } },
    });
    expect(parseEchoArgs([], { POD_NAME: 'env-pod', HOSTNAME: 'host-pod' })).toMatchObject({ options: { ports: [3000], context: { pod: 'env-pod' } } });
  });

  it('refuses a bad port or option, and prints its help', async () => {
    expect(parseEchoArgs(['--port', '70000'], {})).toEqual({ error: expect.stringContaining('"70000"') });
    expect(parseEchoArgs(['--port', 'http'], {})).toEqual({ error: expect.stringContaining('"http"') });
    expect(parseEchoArgs(['--bogus'], {})).toEqual({ error: expect.stringContaining('bogus') });
    const out: string[] = [];
    const err: string[] = [];
    const sink = (a: string[]) => ({ write: (s: string) => a.push(s) });
    await expect(runEcho(['--help'], {}, sink(out), sink(err))).resolves.toEqual({ exitCode: 0 });
    expect(out.join('')).toBe(ECHO_HELP);
    await expect(runEcho(['--port', 'x'], {}, sink(out), sink(err))).resolves.toEqual({ exitCode: 2 });
    expect(err.join('')).toMatch(/--port/);
  });

  it('announces its ports once it serves', async () => {
    const out: string[] = [];
    const started = await runEcho(['--port', '0', '--host', '127.0.0.1', '--pod', 'x'], {}, { write: (s: string) => out.push(s) }, { write: () => {} });
    if (!('server' in started)) throw new Error('did not start');
    try {
      const { ports, pid } = JSON.parse(out.join('')) as { ports: number[]; pid: number };
      expect(pid).toBe(process.pid);
      expect(json(await get(ports[0]!, '/'))).toMatchObject({ pod: 'x', httpPort: String(ports[0]) });
    } finally {
      await started.server.close();
    }
  });
});

describe('the GAMMA fixtures', () => {
  let dir = '';
  afterEach(() => {
    if (dir) rmSync(dir, { recursive: true, force: true });
    dir = '';
  });

  /** The control plane's view of the base plus one case's routes, laid out as writeGammaConfig does for a runner. */
  const load = (c?: GammaCase) => {
    dir = mkdtempSync(join(tmpdir(), 'nm-gamma-'));
    writeGammaConfig(dir, '/opt/echo/echo-server-main.js', c);
    const snap = loadSnapshot(dir);
    rmSync(dir, { recursive: true, force: true });
    dir = '';
    return snap;
  };

  it('hold the base as the suite has it: its namespaces, echo Services and pods on two nodes, running the echo', () => {
    const snap = load();
    expect(snap.problems.filter((p) => p.severity === 'error')).toEqual([]);
    expect(snap.namespaces.map((n) => n.metadata.name).sort()).toEqual([MESH_NS, CONSUMER_NS].sort());
    expect(snap.services.map((s) => `${s.metadata.namespace}/${s.metadata.name}@${s.spec.clusterIP}`).sort()).toEqual(Object.values(SERVICES).map((s) => `${s.namespace}/${s.name}@${s.clusterIP}`).sort());
    expect(snap.pods.map((p) => `${p.metadata.namespace}/${p.metadata.name}@${p.spec.nodeName}`).sort()).toEqual(Object.values(PODS).map((p) => `${p.namespace}/${p.name}@${p.node}`).sort());
    expect(new Set(snap.pods.map((p) => p.spec.nodeName))).toEqual(new Set(NODES));
    for (const p of snap.pods) {
      expect(p.metadata.labels).toEqual(Object.values(PODS).find((x) => x.name === p.metadata.name)!.labels);
      expect([...p.spec.containers[0]!.command, ...p.spec.containers[0]!.args]).toEqual(['node', '/opt/echo/echo-server-main.js', '--port', '8080']);
      expect(backendName(p.metadata.name)).toMatch(/^echo-v[12]$/);
    }
  });

  it('load the routes file of every case without errors', () => {
    const files = new Set(readdirSync(join(FIXTURE_DIR, 'routes')).map((f) => `routes/${f}`));
    for (const c of CASES) {
      if (!c.file) continue;
      expect(files.has(c.file)).toBe(true);
      const snap = load(c);
      expect({ test: c.test, errors: snap.problems.filter((p) => p.severity === 'error') }).toEqual({ test: c.test, errors: [] });
      const kinds = readFileSync(join(FIXTURE_DIR, c.file), 'utf8').match(/^kind: \w+/gm) ?? [];
      expect({ test: c.test, routes: snap.httpRoutes.length }).toEqual({ test: c.test, routes: kinds.filter((k) => k === 'kind: HTTPRoute').length });
    }
    // Every routes file belongs to a case.
    expect([...files].filter((f) => !CASES.some((c) => c.file === f))).toEqual([]);
  });

  it('name each case once and send each request to a Service of the base or a pod', () => {
    expect(new Set(CASES.map((c) => c.test)).size).toBe(CASES.length);
    for (const c of CASES) {
      expect(new Set(c.requests.map((r) => r.name)).size).toBe(c.requests.length);
      for (const r of c.requests) {
        if ('service' in r.to) expect(SERVICES[r.to.service].ports).toHaveProperty(String(r.to.port));
        else expect(r.authority).toBeUndefined();
        if (r.expect.weights) expect(Object.values(r.expect.weights.share).reduce((a, b) => a + b, 0)).toBeCloseTo(1);
      }
    }
  });
});
