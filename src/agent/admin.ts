// The agent's HTTP endpoints: admin on 127.0.0.1:15000 (/config_dump, /debug/flows, /debug/capture, /debug/runtime),
// Prometheus metrics on :15020/metrics, readiness on :15021/healthz/ready. Each joins its
// port's SO_REUSEPORT group, so a second agent of the node (an upgrade) binds beside the
// first; one that cannot bind is retried with backoff and keeps the agent unready.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Logger } from '../log.js';
import { runtimeMonitor } from '../telemetry/index.js';

type RouteResult = { status?: number; type?: string; body: string | object } | 'streamed';
/** A route answers with a body, or `'streamed'` when it writes the response itself (a stream). */
export type Route = (req: IncomingMessage, url: URL, res: ServerResponse) => Promise<RouteResult> | RouteResult;

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

/** Serves routes on ep; every answer carries `headers` (the agent names itself in them). */
export async function serveRoutes(ep: Endpoint, routes: Record<string, Route>, log: Logger, headers: Record<string, string> = {}): Promise<Server> {
  const srv = createServer((req, res: ServerResponse) => {
    for (const [k, v] of Object.entries(headers)) res.setHeader(k, v);
    const url = new URL(req.url ?? '/', 'http://localhost');
    const route = routes[url.pathname];
    if (!route) {
      res.writeHead(404, { 'content-type': 'text/plain' }).end(`not found; try: ${Object.keys(routes).join(' ')}\n`);
      return;
    }
    Promise.resolve(route(req, url, res)).then(
      (r) => {
        if (r === 'streamed') return;
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
    // Two agents answer on one port during an upgrade; each answer names its agent.
    srv.listen({ port: ep.port, host: ep.host, reusePort: true }, () => {
      srv.off('error', reject);
      resolve();
    });
  });
  return srv;
}

export interface EndpointStatus {
  name: string;
  address: string;
  bound: boolean;
  /** Bind attempts so far. */
  attempts: number;
  /** Why the last attempt failed, while unbound. */
  error?: string;
}

interface Entry {
  status: EndpointStatus;
  server?: Server;
  timer?: NodeJS.Timeout;
}

const RETRY_FIRST_MS = 200;
const RETRY_MAX_MS = 10_000;

/**
 * The agent's HTTP endpoints. One that cannot be bound (a process that holds the port without
 * SO_REUSEPORT, an agent from before this version) is never given up on and never silent: it
 * is logged as an error and retried with backoff, the agent reports itself unready while any
 * endpoint is unbound, and /config_dump lists each endpoint's state.
 */
export class HttpEndpoints {
  readonly #log: Logger;
  readonly #headers: Record<string, string>;
  readonly #entries: Entry[] = [];
  #closed = false;

  constructor(log: Logger, headers: Record<string, string> = {}) {
    this.#log = log;
    this.#headers = headers;
  }

  /** Binds now, or keeps trying in the background; resolves after the first attempt either way. */
  async serve(name: string, ep: Endpoint, routes: Record<string, Route>): Promise<void> {
    const address = ep.host.includes(':') ? `[${ep.host}]:${ep.port}` : `${ep.host}:${ep.port}`;
    const e: Entry = { status: { name, address, bound: false, attempts: 0 } };
    this.#entries.push(e);
    await this.#attempt(e, ep, routes, RETRY_FIRST_MS);
  }

  async #attempt(e: Entry, ep: Endpoint, routes: Record<string, Route>, delay: number): Promise<void> {
    if (this.#closed) return;
    e.status.attempts++;
    try {
      const srv = await serveRoutes(ep, routes, this.#log, this.#headers);
      if (this.#closed) {
        srv.close();
        return;
      }
      e.server = srv;
      e.status.bound = true;
      delete e.status.error;
      if (e.status.attempts > 1) this.#log.info({ endpoint: e.status.name, address: e.status.address, attempts: e.status.attempts }, 'agent endpoint bound after retrying');
    } catch (err) {
      e.status.error = `${(err as { code?: string }).code ?? 'error'}: ${(err as Error).message}`;
      this.#log.error(
        { err, endpoint: e.status.name, address: e.status.address, attempts: e.status.attempts, retryMs: delay },
        'cannot bind an agent endpoint; the agent stays unready until it is bound, retrying',
      );
      e.timer = setTimeout(() => void this.#attempt(e, ep, routes, Math.min(delay * 2, RETRY_MAX_MS)), delay);
      e.timer.unref();
    }
  }

  status(): EndpointStatus[] {
    return this.#entries.map((e) => ({ ...e.status }));
  }

  /** Endpoints not bound yet, by name and address. */
  unbound(): EndpointStatus[] {
    return this.status().filter((s) => !s.bound);
  }

  /**
   * Stops retrying and closes every bound endpoint: idle keep-alive connections now, a request
   * still being answered gets a second to finish.
   */
  async close(): Promise<void> {
    this.#closed = true;
    await Promise.all(
      this.#entries.map((e) => {
        if (e.timer) clearTimeout(e.timer);
        const srv = e.server;
        e.server = undefined;
        e.status.bound = false;
        if (!srv) return undefined;
        const closed = new Promise((r) => srv.close(r));
        srv.closeIdleConnections();
        const force = setTimeout(() => srv.closeAllConnections(), 1000);
        return closed.finally(() => clearTimeout(force));
      }),
    );
  }
}

/** GET /debug/runtime: event-loop delay and GC pauses since the last reset; `?reset=1` answers, then starts a new window. */
function runtimeRoute(url: URL): { body: object } {
  const m = runtimeMonitor();
  const body = m.snapshot();
  if (url.searchParams.get('reset') === '1') m.reset();
  return { body };
}

/** The agent's three endpoints and what they serve. */
export interface AgentEndpoints {
  log: Logger;
  admin: Endpoint;
  metricsAt: Endpoint;
  readyAt: Endpoint;
  /** Why the agent is not ready; empty when it is. */
  notReady(): string[];
  configDump(): object;
  flows(limit: number): object | Promise<object>;
  metrics(): Promise<{ contentType: string; body: string }>;
  /** GET /debug/capture (docs/capture.md). */
  capture?: Route;
}

/**
 * Admin (/config_dump, /debug/flows, /debug/runtime, /healthz/ready, /metrics), metrics and readiness. Each
 * answer names the agent that gave it (x-nodemesh-agent-pid): two agents share these ports
 * during an upgrade. The readiness body lists every reason the agent is not ready.
 */
export async function serveAgentEndpoints(o: AgentEndpoints): Promise<HttpEndpoints> {
  const readiness = (): { status?: number; body: string } => {
    const why = o.notReady();
    return why.length === 0 ? { body: 'ready\n' } : { status: 503, body: `not ready: ${why.join('; ')}\n` };
  };
  const metrics = async () => {
    const r = await o.metrics();
    return { type: r.contentType, body: r.body };
  };
  runtimeMonitor(); // from start-up, so the first window is the agent's whole life
  const http = new HttpEndpoints(o.log, { 'x-nodemesh-agent-pid': String(process.pid) });
  await http.serve('admin', o.admin, {
    '/config_dump': () => ({ body: o.configDump() }),
    '/debug/flows': async (_req, url) => ({ body: await o.flows(Number(url.searchParams.get('limit') ?? 1000)) }),
    ...(o.capture ? { '/debug/capture': o.capture } : {}),
    '/debug/runtime': (_req, url) => runtimeRoute(url),
    '/healthz/ready': readiness,
    '/metrics': metrics,
  });
  await http.serve('metrics', o.metricsAt, { '/metrics': metrics, '/stats/prometheus': metrics });
  await http.serve('readiness', o.readyAt, { '/healthz/ready': readiness });
  return http;
}
