// The control plane's HTTP admin endpoint (loopback by default): readiness, config errors and
// the resources being served, as JSON. Readiness is open to all; the /debug pages, which list
// every workload, answer only a loopback peer or a request carrying the admin token, so an
// admin bound to a pod IP (for the kubelet's readiness probe) shows nothing to the network.
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Logger } from '../log.js';
import { formatCidr, isIPv4 } from '../net/index.js';
import { bearerToken, sameSecret } from './auth.js';

export interface AdminHandlers {
  ready(): boolean;
  /** The readiness body's line (default `ready` / `not ready`). */
  readyDetail?(): string;
  configErrors(): unknown;
  resources(): unknown;
}

export interface AdminServer {
  server: Server;
  /** `host:port` actually bound. */
  address: string;
  close(): Promise<void>;
}

/** JSON for operators: IP bytes and CIDRs as strings. */
export function debugJson(value: unknown): unknown {
  return JSON.parse(
    JSON.stringify(value, (_k, v: unknown) => {
      if (v && typeof v === 'object' && 'bytes' in v && 'prefixLen' in v) return formatCidr(v as never);
      return v;
    }),
  );
}

/** Whether a peer address is loopback (127/8, ::1, or 127/8 mapped into IPv6). */
export function isLoopbackPeer(address: string | undefined): boolean {
  if (!address) return false;
  const v4 = address.startsWith('::ffff:') ? address.slice(7) : address;
  return address === '::1' || (isIPv4(v4) && v4.startsWith('127.'));
}

function mayDebug(req: IncomingMessage, adminToken: string): boolean {
  if (isLoopbackPeer(req.socket.remoteAddress)) return true;
  const token = bearerToken(req.headers.authorization);
  return token !== undefined && sameSecret(token, adminToken);
}

/** `adminToken` opens the /debug pages to a non-loopback peer that sends it as a bearer token. */
export async function startAdmin(host: string, port: number, h: AdminHandlers, log: Logger, adminToken: string): Promise<AdminServer> {
  const server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://admin');
    const json = (code: number, body: unknown) => {
      res.writeHead(code, { 'content-type': 'application/json' });
      res.end(JSON.stringify(body, null, 2) + '\n');
    };
    if (req.method !== 'GET' && req.method !== 'HEAD') return json(405, { error: 'only GET' });
    if (url.pathname.startsWith('/debug/') && !mayDebug(req, adminToken)) {
      log.warn({ peer: req.socket.remoteAddress, path: url.pathname }, 'refused a /debug request without the admin token');
      res.setHeader('www-authenticate', 'Bearer realm="nodemesh-control-plane"');
      return json(401, { error: 'the /debug pages need "authorization: Bearer <admin token>" (the admin-token file of the state dir), or a loopback connection' });
    }
    try {
      switch (url.pathname) {
        case '/healthz/ready': {
          const ok = h.ready();
          res.writeHead(ok ? 200 : 503, { 'content-type': 'text/plain' });
          return res.end(`${h.readyDetail?.() ?? (ok ? 'ready' : 'not ready')}\n`);
        }
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
