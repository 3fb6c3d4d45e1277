// L7 in the node proxies, end to end on two simulated nodes: HTTPRoute and VirtualService routing
// on the source side (weights, header matches, retries, faults, timeouts), L7 authorization and
// JWTs on the destination side — same node, across nodes over HBONE, and from outside the mesh —
// request metrics from both reporters, and bad input refused by the proxy. Real curl in pods, the
// echo backend (test/helpers/echo-server.ts) behind Services with `appProtocol: http`.
import { spawnSync } from 'node:child_process';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { exportJWK, generateKeyPair, SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { clusterUp, type Cluster } from '../helpers/cluster.js';
import { cli, leftovers, repoRoot, writeConfig } from '../helpers/mesh.js';
import { describePrivileged } from '../helpers/privileged.js';

const echoMain = join(repoRoot, 'dist-test', 'test', 'helpers', 'echo-server-main.js');
const ISSUER = 'https://issuer.nodemesh.test';
const VIP = { echo: '10.96.60.10', v1: '10.96.60.11', v2: '10.96.60.12', secure: '10.96.60.13', tcp: '10.96.60.14', dr: '10.96.60.15' };

const pod = (name: string, ns: string, node: string, labels: Record<string, string>) => `---
apiVersion: v1
kind: Pod
metadata: { name: ${name}, namespace: ${ns}, labels: ${JSON.stringify(labels)} }
spec:
  nodeName: ${node}
  containers:
  - { name: echo, command: [${process.execPath}, ${echoMain}, --port, "8080"], env: [{ name: NAMESPACE, value: ${ns} }], ports: [{ containerPort: 8080 }] }
`;
const sleeper = (name: string, ns: string, node: string) => `---
apiVersion: v1
kind: Pod
metadata: { name: ${name}, namespace: ${ns} }
spec:
  nodeName: ${node}
  containers:
  - { name: c, command: [sleep, infinity] }
`;
const service = (name: string, ip: string, selector: Record<string, string>, portName = 'http') => `---
apiVersion: v1
kind: Service
metadata: { name: ${name}, namespace: mesh }
spec:
  clusterIP: ${ip}
  selector: ${JSON.stringify(selector)}
  ports: [{ name: ${portName}, port: 80, targetPort: 8080 }]
`;

function config(jwks: string): string {
  return `apiVersion: v1
kind: Namespace
metadata: { name: mesh, labels: { nodemesh.io/dataplane-mode: ambient } }
---
apiVersion: v1
kind: Namespace
metadata: { name: plain }
${service('echo', VIP.echo, { app: 'echo' })}${service('echo-v1', VIP.v1, { app: 'echo', version: 'v1' })}${service('echo-v2', VIP.v2, { app: 'echo', version: 'v2' })}${service('secure', VIP.secure, { app: 'secure' })}${service('echo-tcp', VIP.tcp, { app: 'echo', version: 'l4' }, 'tcp')}${service('echo-dr', VIP.dr, { app: 'echo' })}${pod('echo-v1', 'mesh', 'node-a', { app: 'echo', version: 'v1' })}${pod('echo-v2', 'mesh', 'node-b', { app: 'echo', version: 'v2' })}${pod('secure', 'mesh', 'node-b', { app: 'secure' })}${pod('echo-l4', 'mesh', 'node-a', { app: 'echo', version: 'l4' })}${sleeper('client', 'mesh', 'node-a')}${sleeper('outsider', 'plain', 'node-a')}---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: echo-split, namespace: mesh }
spec:
  parentRefs: [{ group: "", kind: Service, name: echo, port: 80 }]
  rules:
  - matches: [{ headers: [{ name: x-canary, value: "yes" }] }]
    backendRefs: [{ name: echo-v2, port: 80 }]
  - backendRefs:
    - { name: echo-v1, port: 80, weight: 90 }
    - { name: echo-v2, port: 80, weight: 10 }
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: echo-v1-policies, namespace: mesh }
spec:
  parentRefs: [{ group: "", kind: Service, name: echo-v1, port: 80 }]
  rules:
  - matches: [{ path: { type: PathPrefix, value: /retried } }]
    filters: [{ type: URLRewrite, urlRewrite: { path: { type: ReplacePrefixMatch, replacePrefixMatch: / } } }]
    retry: { attempts: 2, codes: [503], backoff: 10ms }
    backendRefs: [{ name: echo-v1, port: 80 }]
  - matches: [{ path: { type: PathPrefix, value: /slow } }]
    filters: [{ type: URLRewrite, urlRewrite: { path: { type: ReplacePrefixMatch, replacePrefixMatch: / } } }]
    timeouts: { request: 300ms }
    backendRefs: [{ name: echo-v1, port: 80 }]
  - backendRefs: [{ name: echo-v1, port: 80 }]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: echo-v2-faults, namespace: mesh }
spec:
  hosts: [echo-v2]
  http:
  - match: [{ headers: { x-fault: { exact: abort } } }]
    fault: { abort: { httpStatus: 418, percentage: { value: 100 } } }
    route: [{ destination: { host: echo-v2 } }]
  - route: [{ destination: { host: echo-v2 } }]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: { name: echo-dr, namespace: mesh }
spec:
  host: echo-dr
  trafficPolicy: { loadBalancer: { simple: ROUND_ROBIN } }
  subsets:
  - { name: v1, labels: { version: v1 } }
  - { name: v2, labels: { version: v2 } }
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: echo-dr, namespace: mesh }
spec:
  hosts: [echo-dr.mesh.svc.cluster.local]
  http:
  - match: [{ headers: { x-version: { exact: v2 } } }]
    route: [{ destination: { host: echo-dr, subset: v2 } }]
  - route:
    - { destination: { host: echo-dr, subset: v1 }, weight: 100 }
    - { destination: { host: echo-dr, subset: v2 }, weight: 0 }
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: no-admin-writes, namespace: mesh }
spec:
  selector: { matchLabels: { app: echo } }
  action: DENY
  rules:
  - to: [{ operation: { methods: [POST], paths: ["/admin*"] } }]
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: { name: secure-jwt, namespace: mesh }
spec:
  selector: { matchLabels: { app: secure } }
  jwtRules: [{ issuer: "${ISSUER}", jwks: '${jwks}' }]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: secure-alice, namespace: mesh }
spec:
  selector: { matchLabels: { app: secure } }
  action: ALLOW
  rules:
  - from: [{ source: { requestPrincipals: ["${ISSUER}/alice"] } }]
`;
}

interface Reply {
  status: number;
  body: string;
  json?: { pod?: string; path?: string; headers?: Record<string, string[]>; attempt?: number };
}

describePrivileged('L7 in the node proxies, on two nodes', () => {
  let c: Cluster;
  let dir: string;
  let pinRoots: string[] = [];
  const keys = { good: '', expired: '', stranger: '' };

  /** One curl in a pod; `-w` appends the status on a line of its own. */
  const curl = (from: string, url: string, args: string[] = []): Reply => {
    const r = c.exec(from, ['curl', '-s', '-m', '10', '-w', '\n%{http_code}', ...args, url]);
    const lines = r.stdout.split('\n');
    const status = Number(lines.pop());
    const body = lines.join('\n');
    let json: Reply['json'];
    try {
      json = JSON.parse(body) as Reply['json'];
    } catch {
      json = undefined;
    }
    return { status, body, ...(json ? { json } : {}) };
  };
  /** `n` requests on one keep-alive connection; the pods that answered, counted. */
  const pods = (from: string, url: string, n: number, args: string[] = []): Record<string, number> => {
    const r = c.exec(from, ['curl', '-s', '-m', '30', '-w', '\n--nm--\n', ...args, ...Array.from({ length: n }, () => url)]);
    const out: Record<string, number> = {};
    for (const part of r.stdout.split('\n--nm--\n').filter((x) => x.trim())) {
      const p = (JSON.parse(part) as { pod: string }).pod;
      out[p] = (out[p] ?? 0) + 1;
    }
    return out;
  };

  beforeAll(async () => {
    const { publicKey, privateKey } = await generateKeyPair('RS256');
    const jwk = { ...(await exportJWK(publicKey)), kid: 'k1', alg: 'RS256', use: 'sig' };
    const other = await generateKeyPair('RS256');
    const sign = (key: Parameters<SignJWT['sign']>[0], exp: string | number, iss = ISSUER) => new SignJWT({}).setProtectedHeader({ alg: 'RS256', kid: 'k1' }).setIssuer(iss).setSubject('alice').setIssuedAt().setExpirationTime(exp).sign(key);
    keys.good = await sign(privateKey, '1h');
    keys.expired = await sign(privateKey, Math.floor(Date.now() / 1000) - 3600);
    keys.stranger = await sign(other.privateKey, '1h');
    dir = writeConfig(config(JSON.stringify({ keys: [jwk] })));
    c = await clusterUp(dir);
    pinRoots = c.pinRoots;
  });

  afterAll(async () => {
    await c?.down();
    if (dir) rmSync(dir, { recursive: true, force: true });
    expect(leftovers(...pinRoots)).toEqual([]);
  });

  describe('routing on the source side', () => {
    it('splits 90/10 by weight, per request on one connection, and a header routes to the canary', () => {
      const split = pods('mesh/client', `http://${VIP.echo}/`, 200);
      expect((split['echo-v1'] ?? 0) + (split['echo-v2'] ?? 0)).toBe(200);
      // Binomial(200, 0.1): 20 expected; 6..40 is beyond 4 standard deviations either way.
      expect(split['echo-v2']).toBeGreaterThanOrEqual(6);
      expect(split['echo-v2']).toBeLessThanOrEqual(40);
      expect(pods('mesh/client', `http://${VIP.echo}/`, 20, ['-H', 'x-canary: yes'])).toEqual({ 'echo-v2': 20 });
    });

    it('a pod IP dialed directly bypasses the Service routes', () => {
      expect(pods('mesh/client', `http://${c.ip('mesh/echo-v1')}:8080/`, 20, ['-H', 'x-canary: yes'])).toEqual({ 'echo-v1': 20 });
    });

    it('a retry hides a flaky backend; without the retry rule the failure shows', () => {
      const hidden = curl('mesh/client', `http://${VIP.v1}/retried/flaky/1?key=r1`);
      expect(hidden.status).toBe(200);
      expect(hidden.json?.attempt).toBe(2);
      expect(hidden.json?.path).toBe('/flaky/1?key=r1');
      const shown = curl('mesh/client', `http://${VIP.v1}/flaky/1?key=r2`);
      expect(shown.status).toBe(503);
    });

    it('an injected fault answers 418 for the matching header only (VirtualService)', () => {
      const faulted = curl('mesh/client', `http://${VIP.v2}/`, ['-H', 'x-fault: abort']);
      expect(faulted.status).toBe(418);
      expect(faulted.body).toBe('fault filter abort');
      expect(curl('mesh/client', `http://${VIP.v2}/`).json?.pod).toBe('echo-v2');
    });

    it('VirtualService routes to DestinationRule subsets: by header to v2, else all to v1', () => {
      // echo-dr selects v1, v2 and echo-l4: without the subsets its requests would spread over all three.
      expect(pods('mesh/client', `http://${VIP.dr}/`, 20)).toEqual({ 'echo-v1': 20 });
      expect(pods('mesh/client', `http://${VIP.dr}/`, 10, ['-H', 'x-version: v2'])).toEqual({ 'echo-v2': 10 });
    });

    it('a request timeout answers 504 for a slow backend and lets a quick one through', () => {
      expect(curl('mesh/client', `http://${VIP.v1}/slow/delay/3000`).status).toBe(504);
      expect(curl('mesh/client', `http://${VIP.v1}/slow/delay/10`).status).toBe(200);
    });

    it('propagates a traceparent with the proxy as parent and adds x-request-id', () => {
      const r = curl('mesh/client', `http://${VIP.v1}/`, ['-H', 'traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01']);
      expect(r.status, r.body).toBe(200);
      const h = r.json?.headers ?? {};
      expect(h.Traceparent?.[0]).toMatch(/^00-0af7651916cd43dd8448eb211c80319c-[0-9a-f]{16}-01$/);
      expect(h.Traceparent?.[0]).not.toContain('b7ad6b7169203331');
      expect(h['X-Request-Id']?.[0]).toMatch(/^[0-9a-f-]{36}$/);
    });
  });

  describe('authorization on the destination side', () => {
    const cases = [
      { name: 'same node, in process', from: 'mesh/client', url: () => `http://${VIP.v1}` },
      { name: 'across nodes over HBONE', from: 'mesh/client', url: () => `http://${VIP.v2}` },
      { name: 'a pod IP across nodes', from: 'mesh/client', url: () => `http://${c.ip('mesh/echo-v2')}:8080` },
      { name: 'from outside the mesh (plaintext inbound)', from: 'plain/outsider', url: () => `http://${c.ip('mesh/echo-v2')}:8080` },
    ];
    for (const k of cases) {
      it(`POST /admin is denied with 403 while GET /admin passes: ${k.name}`, () => {
        const denied = curl(k.from, `${k.url()}/admin/users`, ['-X', 'POST']);
        expect(denied.status).toBe(403);
        expect(denied.body).toBe('RBAC: access denied');
        const get = curl(k.from, `${k.url()}/admin/users`);
        expect(get.status).toBe(200);
        expect(get.json?.path).toBe('/admin/users');
        expect(curl(k.from, `${k.url()}/other`, ['-X', 'POST']).status).toBe(200);
      });
    }

    it('the same DENY on an L4 port denies every connection (Istio\'s conservative rule)', () => {
      // echo-tcp's port is named tcp: no HTTP there, so the DENY without its HTTP fields matches all.
      // (echo-l4 is also behind the http Service echo: a port two Services disagree on stays L4.)
      const r = c.exec('mesh/client', ['curl', '-s', '-m', '5', '-o', '/dev/null', '-w', '%{http_code}', `http://${VIP.tcp}/`]);
      expect(r.stdout).toBe('000');
      expect(curl('mesh/client', `http://${VIP.v1}/`).status).toBe(200);
    });

    it('JWT: a valid token passes and is not forwarded; none is 403, a bad or expired one 401', () => {
      const ok = curl('mesh/client', `http://${VIP.secure}/`, ['-H', `authorization: Bearer ${keys.good}`]);
      expect(ok.status).toBe(200);
      expect(ok.json?.headers?.Authorization).toBeUndefined();
      expect(curl('mesh/client', `http://${VIP.secure}/`).status).toBe(403);
      for (const t of [keys.expired, keys.stranger, 'not.a.jwt']) {
        const r = curl('mesh/client', `http://${VIP.secure}/`, ['-H', `authorization: Bearer ${t}`]);
        expect(r.status).toBe(401);
        expect(r.body).toBe('Jwt verification fails');
      }
    });
  });

  it('request metrics come from both reporters, with response codes and flags', async () => {
    curl('mesh/client', `http://${VIP.v2}/admin/x`, ['-X', 'POST']);
    curl('mesh/client', `http://${VIP.v2}/m`);
    const series = (text: string) => text.split('\n').filter((l) => l.startsWith('istio_requests_total{'));
    const b = series(await c.metrics('node-b'));
    const a = series(await c.metrics('node-a'));
    const has = (lines: string[], ...parts: string[]) => lines.some((l) => parts.every((p) => l.includes(p)));
    expect(has(b, 'reporter="destination"', 'destination_workload="echo-v2"', 'response_code="403"', 'response_flags="RBAC"', 'destination_service_name="echo-v2"', 'source_workload="client"')).toBe(true);
    expect(has(b, 'reporter="destination"', 'destination_workload="echo-v2"', 'response_code="200"')).toBe(true);
    expect(has(a, 'reporter="source"', 'destination_workload="echo-v2"', 'response_code="403"', 'destination_service_name="echo-v2"')).toBe(true);
    // The same-node path reports both sides from one proxy, a refusal included.
    curl('mesh/client', `http://${VIP.v1}/admin/x`, ['-X', 'POST']);
    const a2 = series(await c.metrics('node-a'));
    expect(has(a2, 'reporter="destination"', 'destination_workload="echo-v1"', 'response_code="200"')).toBe(true);
    expect(has(a2, 'reporter="destination"', 'destination_workload="echo-v1"', 'response_code="403"', 'response_flags="RBAC"')).toBe(true);
    expect(has(a2, 'reporter="source"', 'destination_workload="echo-v1"', 'response_code="403"', 'response_flags="RBAC"')).toBe(true);
    expect((await c.metrics('node-a')).split('\n').some((l) => l.startsWith('istio_request_duration_milliseconds_bucket{') && l.includes('reporter="source"'))).toBe(true);
  });

  it('nodemesh capture shows each HTTP request with its verdict, policy, method, path and status', () => {
    curl('mesh/client', `http://${VIP.v2}/admin/cap`, ['-X', 'POST']);
    curl('mesh/client', `http://${VIP.v2}/cap-ok`);
    // Replayed from what the agents kept (--since), then followed until the timeout ends it.
    const r = spawnSync(cli, ['capture', '--state-dir', c.sd, '--all-nodes', '--protocol', 'http', '--pod', 'mesh/echo-v2', '--since', '30s', '--json'], { encoding: 'utf8', timeout: 8_000 });
    const recs = r.stdout.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as { node: string; protocol: string; verdict: string; policy?: string; direction: string; l7?: { method: string; path: string; status: number } });
    const denied = recs.find((x) => x.node === 'node-b' && x.l7?.path === '/admin/cap');
    expect(denied).toMatchObject({ protocol: 'http', verdict: 'denied', policy: 'mesh/no-admin-writes', direction: 'inbound', l7: { method: 'POST', status: 403 } });
    const ok = recs.find((x) => x.node === 'node-b' && x.l7?.path === '/cap-ok');
    expect(ok).toMatchObject({ verdict: 'allowed', l7: { method: 'GET', status: 200 } });
    // The source node sees the same requests from its side.
    expect(recs.some((x) => x.node === 'node-a' && x.direction === 'outbound' && x.l7?.path === '/admin/cap' && x.l7.status === 403)).toBe(true);
  });

  describe('bad input is refused by the proxy, never passed on', () => {
    /** Sends `payload` raw (`@BIG@` in it becomes that many bytes of `a`: argv is too small for a big head). */
    const raw = (payload: string, big = 0) => {
      const py = `import socket,sys\ns=socket.create_connection(("${VIP.v1}",80),5)\ns.sendall(bytes.fromhex(sys.argv[1]).replace(b"@BIG@", b"a"*int(sys.argv[2])))\ns.settimeout(15)\nd=b""\ntry:\n  while True:\n    x=s.recv(65536)\n    if not x: break\n    d+=x\nexcept Exception: pass\nprint(d.decode("latin1"))`;
      return c.exec('mesh/client', ['python3', '-c', py, Buffer.from(payload, 'latin1').toString('hex'), String(big)]).stdout;
    };

    it('Content-Length with Transfer-Encoding is 400, and the request hidden behind it never reaches the app', () => {
      const smuggle = 'POST / HTTP/1.1\r\nHost: echo-v1\r\nContent-Length: 30\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n';
      const out = raw(smuggle);
      expect(out).toMatch(/^HTTP\/1\.1 400 /);
      expect(out).not.toContain('/smuggled');
      // The same connection shape without the conflict is served.
      expect(raw('POST / HTTP/1.1\r\nHost: echo-v1\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi')).toMatch(/^HTTP\/1\.1 200 /);
    });

    it('a head that never completes (slowloris) is answered 408 and closed; a complete one on the same port is served', () => {
      // The engine's header timeout is 10 s; the client waits up to 15 s, so only the proxy's 408 can end it.
      expect(raw('GET / HTTP/1.1\r\nHost: echo-v1\r\nX-Slow: a')).toMatch(/^HTTP\/1\.1 408 /);
      expect(raw('GET / HTTP/1.1\r\nHost: echo-v1\r\nConnection: close\r\n\r\n')).toMatch(/^HTTP\/1\.1 200 /);
    }, 30_000);

    it('an oversized head is 431', () => {
      expect(raw('GET / HTTP/1.1\r\nHost: echo-v1\r\nX-Big: @BIG@\r\n\r\n', 70 * 1024)).toMatch(/^HTTP\/1\.1 431 /);
      expect(raw('GET / HTTP/1.1\r\nHost: echo-v1\r\nX-Big: @BIG@\r\nConnection: close\r\n\r\n', 1024)).toMatch(/^HTTP\/1\.1 200 /);
    });
  });
});
