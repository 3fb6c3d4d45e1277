// GET /debug/capture on the agent's admin port: the live capture stream (NDJSON, one line per
// record or plaintext chunk, docs/capture.md), behind the admin-token rule, each start and stop
// logged with who asked, for what, and what it lost.
import type { IncomingMessage, ServerResponse } from 'node:http';
import { isNodemeshError } from '../errors.js';
import type { Logger } from '../log.js';
import { bearer, mayCapture } from './auth.js';
import { FILTER_NAMES, filterParams, parseFilter, type FilterName } from './filter.js';
import type { CaptureHub } from './hub.js';

export const CAPTURE_PATH = '/debug/capture';

export interface CaptureEndpointOptions {
  hub: CaptureHub;
  adminToken: string;
  log: Logger;
}

function refuse(res: ServerResponse, status: number, error: string): void {
  if (status === 401) res.setHeader('www-authenticate', 'Bearer realm="nodemesh-agent"');
  res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify({ error }) + '\n');
}

/** Serves one capture request until the client goes away. */
export function serveCapture(o: CaptureEndpointOptions, req: IncomingMessage, res: ServerResponse, url: URL): void {
  const log = o.log.child({ component: 'capture' });
  const values: Partial<Record<FilterName, string>> = {};
  for (const k of FILTER_NAMES) {
    const v = url.searchParams.get(k);
    if (v !== null) values[k] = v;
  }
  const pcapParam = url.searchParams.get('pcap');
  const pcap = pcapParam === '1' || pcapParam === 'true';
  const peer = req.socket.remoteAddress;
  const token = bearer(req.headers.authorization);
  const who = { peer: `${peer}:${req.socket.remotePort}`, tokenPresented: token !== undefined };
  const params = filterParams(values);
  let filter;
  try {
    filter = parseFilter(values);
  } catch (err) {
    if (!isNodemeshError(err)) throw err;
    return refuse(res, 400, err.message);
  }
  const allowed = mayCapture({ peer, token, pcap }, o.adminToken);
  if (!allowed.ok) {
    log.warn({ ...who, filter: params, pcap }, `capture refused: ${allowed.why}`);
    return refuse(res, 401, allowed.why);
  }
  const startedAt = new Date().toISOString();
  log.info({ ...who, tokenValid: allowed.tokenValid, filter: params, pcap, startedAt }, 'capture started');
  res.writeHead(200, { 'content-type': 'application/x-ndjson', 'cache-control': 'no-store' });
  res.flushHeaders();
  req.socket.setNoDelay(true);
  const consumer = o.hub.subscribe({
    filter,
    filterParams: params,
    pcap,
    sink: { write: (line) => res.write(line), onDrain: (cb) => res.on('drain', cb) },
  });
  res.once('close', () => {
    consumer.close();
    log.info({ ...who, filter: params, pcap, startedAt, dropped: consumer.dropped }, 'capture stopped');
  });
}
