// The control plane's HTTP admin endpoint (loopback by default): readiness, config errors and
// the resources being served, as JSON.
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Logger } from '../log.js';

export interface AdminHandlers {
  ready(): boolean;
  configErrors(): unknown;
  resources(): unknown;
}

export interface AdminServer {
  server: Server;
  /** `host:port` actually bound. */
  address: string;
  close(): Promise<void>;
}

export async function startAdmin(host: string, port: number, h: AdminHandlers, log: Logger): Promise<AdminServer> {
  const server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://admin');
    const json = (code: number, body: unknown) => {
      res.writeHead(code, { 'content-type': 'application/json' });
      res.end(JSON.stringify(body, null, 2) + '\n');
    };
    if (req.method !== 'GET' && req.method !== 'HEAD') return json(405, { error: 'only GET' });
    try {
      switch (url.pathname) {
        case '/healthz/ready':
          res.writeHead(h.ready() ? 200 : 503, { 'content-type': 'text/plain' });
          return res.end(h.ready() ? 'ready\n' : 'not ready\n');
        case '/debug/config-errors':
          return json(200, h.configErrors());
        case '/debug/resources':
          return json(200, h.resources());
        default:
          return json(404, { error: `unknown path ${url.pathname}`, paths: ['/healthz/ready', '/debug/config-errors', '/debug/resources'] });
      }
    } catch (err) {
      log.error({ err, path: url.pathname }, 'admin request failed');
      return json(500, { error: (err as Error).message });
    }
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const a = server.address() as AddressInfo;
  return {
    server,
    address: `${a.family === 'IPv6' ? `[${a.address}]` : a.address}:${a.port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
