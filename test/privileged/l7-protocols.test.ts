// The protocols of issue 9 beyond plain HTTP/1.1, end to end on two simulated nodes with real
// clients in pods: WebSocket through the L7 engine's upgrade tunnel (Node's WebSocket against the
// echo's /ws) and gRPC over h2c (@grpc/grpc-js on both ends, test/fixtures/grpc/echo.proto) with
// its status codes from the trailers, same node and across nodes over HBONE, and the gRPC request
// metrics from both reporters.
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { clusterUp, type Cluster } from '../helpers/cluster.js';
import type { GrpcCallsResult } from '../helpers/grpc-echo.js';
import { leftovers, repoRoot, writeConfig } from '../helpers/mesh.js';
import { describePrivileged } from '../helpers/privileged.js';
import type { WsClientResult } from '../helpers/ws-client-main.js';

const built = (name: string) => join(repoRoot, 'dist-test', 'test', 'helpers', name);
const echoMain = built('echo-server-main.js');
const grpcMain = built('grpc-echo-main.js');
const wsClient = built('ws-client-main.js');
const VIP = { wsLocal: '10.96.61.10', wsRemote: '10.96.61.11', grpcLocal: '10.96.61.20', grpcRemote: '10.96.61.21' };

const pod = (name: string, node: string, labels: Record<string, string>, command: string[], port: number) => `---
apiVersion: v1
kind: Pod
metadata: { name: ${name}, namespace: mesh, labels: ${JSON.stringify(labels)} }
spec:
  nodeName: ${node}
  containers:
  - { name: app, command: ${JSON.stringify(command)}, env: [{ name: NAMESPACE, value: mesh }], ports: [{ containerPort: ${port} }] }
`;
/** A Service on port 80; `proto` is the port's appProtocol, or undefined to let the port name say it. */
const service = (name: string, ip: string, selector: Record<string, string>, targetPort: number, portName: string, proto?: string) => `---
apiVersion: v1
kind: Service
metadata: { name: ${name}, namespace: mesh }
spec:
  clusterIP: ${ip}
  selector: ${JSON.stringify(selector)}
  ports: [{ name: ${portName}, port: 80, targetPort: ${targetPort}${proto ? `, appProtocol: ${proto}` : ''} }]
`;

const config = `apiVersion: v1
kind: Namespace
metadata: { name: mesh, labels: { nodemesh.io/dataplane-mode: ambient } }
${service('ws-local', VIP.wsLocal, { app: 'ws', node: 'a' }, 8080, 'web', 'kubernetes.io/ws')}${service('ws-remote', VIP.wsRemote, { app: 'ws', node: 'b' }, 8080, 'web', 'http')}${service('grpc-local', VIP.grpcLocal, { app: 'grpc', node: 'a' }, 9090, 'grpc-echo')}${service('grpc-remote', VIP.grpcRemote, { app: 'grpc', node: 'b' }, 9090, 'rpc', 'grpc')}${pod('ws-a', 'node-a', { app: 'ws', node: 'a' }, [process.execPath, echoMain, '--port', '8080'], 8080)}${pod('ws-b', 'node-b', { app: 'ws', node: 'b' }, [process.execPath, echoMain, '--port', '8080'], 8080)}${pod('grpc-a', 'node-a', { app: 'grpc', node: 'a' }, [process.execPath, grpcMain, 'serve', '--port', '9090'], 9090)}${pod('grpc-b', 'node-b', { app: 'grpc', node: 'b' }, [process.execPath, grpcMain, 'serve', '--port', '9090'], 9090)}---
apiVersion: v1
kind: Pod
metadata: { name: client, namespace: mesh }
spec:
  nodeName: node-a
  containers:
  - { name: c, command: [sleep, infinity] }
`;

describePrivileged('L7 protocols in the node proxies: WebSocket and gRPC, on two nodes', () => {
  let c: Cluster;
  let dir: string;
  let pinRoots: string[] = [];

  /** Runs a program of dist-test/ in the client pod and parses the JSON line it prints. */
  const run = <T>(argv: string[]): T => {
    const r = c.exec('mesh/client', [process.execPath, ...argv], 60_000);
    const line = r.stdout.trim().split('\n').at(-1) ?? '';
    try {
      return JSON.parse(line) as T;
    } catch {
      throw new Error(`${argv[0]} in mesh/client printed no result (exit ${r.code}): ${r.stdout}${r.stderr}`);
    }
  };
  const ws = (url: string, bytes = 1 << 20) => run<WsClientResult>([wsClient, url, String(bytes)]);
  const series = (text: string) => text.split('\n').filter((l) => l.startsWith('istio_requests_total{'));
  const has = (lines: string[], ...parts: string[]) => lines.some((l) => parts.every((p) => l.includes(p)));
  const grpcCalls = (target: string) => run<GrpcCallsResult>([grpcMain, 'call', target, '--message', 'hi', '--fail-with', '5', '--count', '7']);

  beforeAll(async () => {
    dir = writeConfig(config);
    c = await clusterUp(dir);
    pinRoots = c.pinRoots;
  });

  afterAll(async () => {
    await c?.down();
    if (dir) rmSync(dir, { recursive: true, force: true });
    expect(leftovers(...pinRoots)).toEqual([]);
  });

  const cases = [
    { name: 'same node, in process', vip: VIP.wsLocal, grpcVip: VIP.grpcLocal, ws: 'ws-a', grpc: 'grpc-a' },
    { name: 'across nodes over HBONE', vip: VIP.wsRemote, grpcVip: VIP.grpcRemote, ws: 'ws-b', grpc: 'grpc-b' },
  ];

  describe('WebSocket through the upgrade tunnel', () => {
    for (const k of cases) {
      it(`greets, echoes text and 1 MiB binary intact, and closes cleanly: ${k.name}`, () => {
        const r = ws(`ws://${k.vip}/ws?case=${k.ws}`);
        expect(r.error).toBeUndefined();
        // The server's first message came down the tunnel; it names the pod and what the upgrade carried.
        expect(r.hello).toMatchObject({ pod: k.ws, path: `/ws?case=${k.ws}`, method: 'GET', proto: 'HTTP/1.1' });
        expect((r.hello?.headers as Record<string, string[]>).Upgrade).toEqual(['websocket']);
        expect(r.text).toBe('hello through the mesh: ünïcødé ✓');
        expect(r.binary).toEqual({ bytes: 1 << 20, sha256: r.sentSha256, same: true });
        expect(r.close).toEqual({ code: 1000, reason: '', wasClean: true });
      });
    }

    it('an upgrade the backend refuses reaches the client as a failed handshake, beside one that switches', () => {
      const refused = ws(`ws://${VIP.wsRemote}/not-ws`);
      expect(refused.hello).toBeUndefined();
      expect(refused.error).toBeDefined();
      expect(refused.close?.wasClean).toBe(false);
      expect(ws(`ws://${VIP.wsRemote}/ws`, 16).binary?.same).toBe(true);
    });

    it('each upgrade is one http request, 101 from both reporters, and the refused one 400', async () => {
      const a = series(await c.metrics('node-a'));
      const b = series(await c.metrics('node-b'));
      const upgrade = (w: string, code: string) => ['request_protocol="http"', `destination_workload="${w}"`, `response_code="${code}"`, 'source_workload="client"'];
      expect(has(a, 'reporter="source"', 'destination_service_name="ws-local"', ...upgrade('ws-a', '101'))).toBe(true);
      expect(has(a, 'reporter="destination"', ...upgrade('ws-a', '101'))).toBe(true);
      expect(has(a, 'reporter="source"', 'destination_service_name="ws-remote"', ...upgrade('ws-b', '101'))).toBe(true);
      expect(has(b, 'reporter="destination"', ...upgrade('ws-b', '101'))).toBe(true);
      expect(has(b, 'reporter="destination"', ...upgrade('ws-b', '400'))).toBe(true);
      expect(has(a, 'destination_workload="ws-a"', 'response_code="400"')).toBe(false);
    });
  });

  describe('gRPC over h2c', () => {
    for (const k of cases) {
      it(`unary OK, NOT_FOUND from the trailers, and a whole server stream: ${k.name}`, () => {
        const r = grpcCalls(`${k.grpcVip}:80`);
        expect(r.ok).toEqual({ code: 0, message: 'hi', pod: k.grpc });
        expect(r.failed).toEqual({ code: 5, details: 'asked to fail with 5: hi' });
        expect(r.stream).toEqual({ code: 0, messages: ['n0', 'n1', 'n2', 'n3', 'n4', 'n5', 'n6'], pods: [k.grpc] });
      });
    }

    it('request metrics say grpc with grpc_response_status 0 and 5, from both reporters', async () => {
      // Every series this checks was booked by the calls above; one more round makes the file's order not matter.
      for (const k of cases) grpcCalls(`${k.grpcVip}:80`);
      const a = series(await c.metrics('node-a'));
      const b = series(await c.metrics('node-b'));
      const grpcOf = (w: string, status: string) => ['request_protocol="grpc"', `destination_workload="${w}"`, `grpc_response_status="${status}"`, 'response_code="200"', 'source_workload="client"'];
      for (const status of ['0', '5']) {
        // Across nodes: the source reporter on the client's node, the destination reporter on the backend's.
        expect(has(a, 'reporter="source"', 'destination_service_name="grpc-remote"', ...grpcOf('grpc-b', status)), `node-a source, grpc-b, ${status}`).toBe(true);
        expect(has(b, 'reporter="destination"', ...grpcOf('grpc-b', status)), `node-b destination, grpc-b, ${status}`).toBe(true);
        // Same node: one proxy reports both sides.
        expect(has(a, 'reporter="source"', 'destination_service_name="grpc-local"', ...grpcOf('grpc-a', status)), `node-a source, grpc-a, ${status}`).toBe(true);
        expect(has(a, 'reporter="destination"', ...grpcOf('grpc-a', status)), `node-a destination, grpc-a, ${status}`).toBe(true);
      }
      // The destination never reports what only the other node saw, and no gRPC call is booked as plain http.
      expect(has(b, 'destination_workload="grpc-a"')).toBe(false);
      expect(has(a, 'request_protocol="http"', 'destination_workload="grpc-')).toBe(false);
      expect(has(b, 'request_protocol="http"', 'destination_workload="grpc-')).toBe(false);
    });
  });
});
