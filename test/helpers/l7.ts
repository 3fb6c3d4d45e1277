// What the L7 engine's tests share: an engine behind a loopback listener, upstream apps on
// port 0, an open() that dials them, and a raw socket client for byte-exact requests.
import { createServer as createHttpServer, type IncomingMessage, type Server as HttpServer, type ServerResponse } from 'node:http';
import { connect, createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { afterEach } from 'vitest';
import { HttpEngine } from '../../src/l7/index.js';
import type { EngineOptions, HttpRequestHead, RequestRecord, RouteDecision } from '../../src/l7/types.js';

export function listen(server: Server | HttpServer): Promise<number> {
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve((server.address() as AddressInfo).port)));
}

/** Dials 127.0.0.1:port; resolves once connected, rejects with the socket's error (ECONNREFUSED). */
export function dial(port: number): () => Promise<Duplex> {
  return () =>
    new Promise((resolve, reject) => {
      const s = connect({ host: '127.0.0.1', port, allowHalfOpen: true });
      s.once('connect', () => {
        s.off('error', reject);
        resolve(s);
      });
      s.once('error', reject);
    });
}

export interface Front {
  port: number;
  engine: HttpEngine;
  records: RequestRecord[];
  /** Client connections the front accepted. */
  accepted: number;
  /** Resolves when n records were booked. */
  recorded(n: number): Promise<RequestRecord[]>;
  close(): Promise<void>;
}

/** An engine serving every connection to a loopback port with `route`. */
export async function front(route: (req: HttpRequestHead) => RouteDecision | Promise<RouteDecision>, o: EngineOptions = {}): Promise<Front> {
  const engine = new HttpEngine({ sweepMs: 20, ...o });
  const records: RequestRecord[] = [];
  const waiters: { n: number; resolve: (r: RequestRecord[]) => void }[] = [];
  const sockets = new Set<Socket>();
  const f: Front = {
    port: 0,
    engine,
    records,
    accepted: 0,
    recorded: (n) => (records.length >= n ? Promise.resolve(records) : new Promise((resolve) => waiters.push({ n, resolve }))),
    close: async () => {
      for (const s of sockets) s.destroy();
      engine.close();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
  const server = createServer({ allowHalfOpen: true }, (sock) => {
    f.accepted++;
    sockets.add(sock);
    sock.on('close', () => sockets.delete(sock));
    void engine.serve(sock, {
      route,
      onRequest: (r) => {
        records.push(r);
        for (const w of [...waiters]) if (records.length >= w.n) {
          waiters.splice(waiters.indexOf(w), 1);
          w.resolve(records);
        }
      },
    });
  });
  f.port = await listen(server);
  return f;
}

export interface App {
  port: number;
  server: HttpServer;
  /** TCP connections the app accepted. */
  connections: number;
  close(): Promise<void>;
}

/** A node:http upstream app on a loopback port. */
export async function app(handler: (req: IncomingMessage, res: ServerResponse) => void): Promise<App> {
  const server = createHttpServer({ keepAliveTimeout: 30_000 }, handler);
  const a: App = { port: 0, server, connections: 0, close: () => new Promise<void>((r) => { server.closeAllConnections(); server.close(() => r()); }) };
  server.on('connection', () => a.connections++);
  a.port = await listen(server);
  return a;
}

/**
 * Sends `bytes` on a new connection (in the given pieces, each its own write) and collects what
 * comes back until the server closes, `until` says enough, or `ms` pass.
 */
export function raw(port: number, bytes: string | Buffer | (string | Buffer)[], o: { until?: (got: string) => boolean; ms?: number; end?: boolean } = {}): Promise<string> {
  return new Promise((resolve) => {
    const s = connect({ host: '127.0.0.1', port, allowHalfOpen: true });
    let got = '';
    const finish = (): void => {
      clearTimeout(timer);
      s.destroy();
      resolve(got);
    };
    const timer = setTimeout(finish, o.ms ?? 3000);
    s.on('data', (d: Buffer) => {
      got += d.toString('latin1');
      if (o.until?.(got)) finish();
    });
    s.on('error', () => finish());
    s.on('end', finish);
    s.on('close', finish);
    s.once('connect', () => {
      for (const b of Array.isArray(bytes) ? bytes : [bytes]) s.write(b);
      if (o.end) s.end();
    });
  });
}

/** Status codes of the responses in a raw byte stream, in order. */
export function statuses(got: string): number[] {
  return [...got.matchAll(/HTTP\/1\.1 (\d{3}) /g)].map((m) => Number(m[1]));
}

/**
 * Per-test clean-up for a file of engine tests (call once at the top): `defer` what a test
 * opened, undone after it in reverse order; `withFront` is front() closed the same way.
 */
export function perTest(): { defer(...c: (() => Promise<void>)[]): void; withFront: typeof front } {
  let list: (() => Promise<void>)[] = [];
  afterEach(async () => {
    for (const c of list.reverse()) await c();
    list = [];
  });
  return {
    defer: (...c) => void list.push(...c),
    withFront: async (route, o) => {
      const f = await front(route, o);
      list.push(() => f.close());
      return f;
    },
  };
}
