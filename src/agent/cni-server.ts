// The agent's end of the CNI relay (docs/cni.md): a unix socket the nodemesh-cni plugin
// connects to once per ADD/CHECK/DEL. The answer is sent only when the work is done, so a
// pod's containers never start before its redirection is in place.
import { randomBytes } from 'node:crypto';
import { chmodSync, mkdirSync, renameSync, rmSync, statSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { dirname } from 'node:path';
import type { Logger } from '../log.js';
import { CniError } from '../errors.js';

export interface CniRequest {
  command: 'ADD' | 'DEL' | 'CHECK';
  containerId: string;
  netns: string;
  ifName: string;
  /** Parsed CNI_ARGS, e.g. K8S_POD_NAMESPACE. */
  args: Record<string, string>;
  config: Record<string, unknown>;
}

export interface PodAddress {
  ip: string;
  prefix: number;
}

export type CniHandler = (req: CniRequest) => Promise<void>;

const MAX_REQUEST = 1 << 20;

export function parseCniArgs(s: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const kv of s.split(';')) {
    const i = kv.indexOf('=');
    if (i > 0) out[kv.slice(0, i)] = kv.slice(i + 1);
  }
  return out;
}

/** The pod's IPv4 address from the chained plugin's prevResult. */
export function podAddressOf(config: Record<string, unknown>): PodAddress | undefined {
  const prev = config.prevResult as { ips?: { address?: string; version?: string }[] } | undefined;
  for (const ip of prev?.ips ?? []) {
    const m = /^(\d+\.\d+\.\d+\.\d+)\/(\d+)$/.exec(ip.address ?? '');
    if (m) return { ip: m[1]!, prefix: Number(m[2]) };
  }
  return undefined;
}

function parseRequest(raw: string): CniRequest {
  let j: Record<string, unknown>;
  try {
    j = JSON.parse(raw) as Record<string, unknown>;
  } catch (e) {
    throw new CniError('nodemesh agent: cannot decode the plugin request', { cniCode: 6, cniDetails: (e as Error).message });
  }
  const command = j.command;
  if (command !== 'ADD' && command !== 'DEL' && command !== 'CHECK') throw new CniError(`nodemesh agent: unsupported CNI_COMMAND ${JSON.stringify(command)}`, { cniCode: 4 });
  const config = j.config;
  if (typeof config !== 'object' || config === null) throw new CniError('nodemesh agent: request has no network config', { cniCode: 6 });
  return {
    command,
    containerId: String(j.containerId ?? ''),
    netns: String(j.netns ?? ''),
    ifName: String(j.ifName ?? ''),
    args: parseCniArgs(String(j.args ?? '')),
    config: config as Record<string, unknown>,
  };
}

function inodeOf(path: string): bigint | undefined {
  try {
    return statSync(path, { bigint: true }).ino;
  } catch {
    return undefined;
  }
}

export class CniServer {
  readonly #server: Server;
  readonly #path: string;
  readonly #ino: bigint | undefined;

  private constructor(server: Server, path: string, ino: bigint | undefined) {
    this.#server = server;
    this.#path = path;
    this.#ino = ino;
  }

  /** Whether the socket path is still this server's (false once a newer agent took it over). */
  owns(): boolean {
    return this.#ino !== undefined && inodeOf(this.#path) === this.#ino;
  }

  static async listen(path: string, handler: CniHandler, log: Logger): Promise<CniServer> {
    const l = log.child({ component: 'cni' });
    mkdirSync(dirname(path), { recursive: true });
    // Bound at a name of its own, then renamed over `path` in one step: during a takeover (a
    // new agent beside the old one, or a stale socket left by a dead one) a plugin never finds
    // the path missing. And libuv unlinks the name it bound when the server closes, so the
    // old agent's close can never remove the socket that replaced its own.
    const bound = `${path}.${process.pid}.${randomBytes(4).toString('hex')}`;
    // allowHalfOpen: the plugin shuts down its write side to mark the end of the request,
    // and the answer must still go back on the same connection.
    const server = createServer({ allowHalfOpen: true }, (sock) => {
      let buf = '';
      sock.setEncoding('utf8');
      sock.on('error', (err) => l.warn({ err }, 'cni plugin connection error'));
      sock.on('data', (d: string) => {
        buf += d;
        if (buf.length > MAX_REQUEST) sock.destroy();
      });
      sock.on('end', () => {
        void (async () => {
          let cniVersion = '1.0.0';
          try {
            const req = parseRequest(buf);
            if (typeof req.config.cniVersion === 'string') cniVersion = req.config.cniVersion;
            await handler(req);
            // A chained plugin passes the previous result through unchanged.
            const out = req.command === 'ADD' ? JSON.stringify(req.config.prevResult ?? { cniVersion }) : '';
            sock.end(`OK\n${out}`);
          } catch (e) {
            const ce = e instanceof CniError ? e : new CniError(`nodemesh agent: ${(e as Error).message}`, { cniCode: 100, cniDetails: (e as { code?: string }).code ?? '' });
            l.error({ err: e, cniCode: ce.cniCode }, 'cni request failed');
            sock.end(`ERR ${ce.cniCode}\n${JSON.stringify({ cniVersion, code: ce.cniCode, msg: ce.message, details: ce.cniDetails })}`);
          }
        })();
      });
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(bound, () => {
        server.off('error', reject);
        resolve();
      });
    });
    try {
      chmodSync(bound, 0o600);
      renameSync(bound, path);
    } catch (err) {
      server.close();
      throw err;
    }
    return new CniServer(server, path, inodeOf(path));
  }

  /** Stops serving; the socket path is removed only while it is still this server's. */
  async close(): Promise<void> {
    if (this.owns()) rmSync(this.#path, { force: true });
    await new Promise((r) => this.#server.close(r));
  }
}
