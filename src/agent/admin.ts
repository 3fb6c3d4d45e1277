// The agent's HTTP endpoints: admin on 127.0.0.1:15000 (/config_dump, /debug/flows),
// Prometheus metrics on :15020/metrics, readiness on :15021/healthz/ready.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Logger } from '../log.js';

export type Route = (req: IncomingMessage, url: URL) => Promise<{ status?: number; type?: string; body: string | object }> | { status?: number; type?: string; body: string | object };

export interface Endpoint {
  host: string;
  port: number;
}

export function parseEndpoint(s: string, what: string): Endpoint {
  const m = /^(?:(\[[^\]]+\]|[^:]+):)?(\d+)$/.exec(s);
  const port = Number(m?.[2]);
  if (!m || !Number.isInteger(port) || port < 0 || port > 65535) throw new TypeError(`${what}: ${JSON.stringify(s)} is not [host:]port`);
  return { host: m[1]?.replace(/^\[|\]$/g, '') ?? '0.0.0.0', port };
}

export async function serveRoutes(ep: Endpoint, routes: Record<string, Route>, log: Logger): Promise<Server> {
  const srv = createServer((req, res: ServerResponse) => {
    const url = new URL(req.url ?? '/', 'http://localhost');
    const route = routes[url.pathname];
    if (!route) {
      res.writeHead(404, { 'content-type': 'text/plain' }).end(`not found; try: ${Object.keys(routes).join(' ')}\n`);
      return;
    }
    Promise.resolve(route(req, url)).then(
      (r) => {
        const text = typeof r.body === 'string' ? r.body : JSON.stringify(r.body, null, 2) + '\n';
        res.writeHead(r.status ?? 200, { 'content-type': r.type ?? (typeof r.body === 'string' ? 'text/plain' : 'application/json') }).end(text);
      },
      (err: unknown) => {
        log.error({ err, path: url.pathname }, 'admin handler failed');
        res.writeHead(500, { 'content-type': 'text/plain' }).end(`${(err as Error).message}\n`);
      },
    );
  });
  await new Promise<void>((resolve, reject) => {
    srv.once('error', reject);
    srv.listen(ep.port, ep.host, () => {
      srv.off('error', reject);
      resolve();
    });
  });
  return srv;
}
