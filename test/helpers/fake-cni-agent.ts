// A fake of the node agent's CNI socket, for testing the nodemesh-cni plugin and the
// simulator's chained runs without the real agent (written separately, in src/agent). It
// speaks the wire protocol of docs/cni.md: one JSON request per connection, read until the
// plugin shuts down its write side; the answer is `OK` or `ERR <code>`, a newline, a body.
// It records every request; by default it answers OK, with prevResult passed on for ADD.
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface CniRequest {
  command: string;
  containerId: string;
  netns: string;
  ifName: string;
  args: string;
  path: string;
  config: Record<string, unknown>;
}

export interface RecordedRequest extends CniRequest {
  /** CNI_ARGS as a map. */
  argsMap: Record<string, string>;
  /** The request exactly as received. */
  raw: string;
}

export type FakeAnswer =
  | { ok: true; body?: string }
  | { ok: false; code: number; body?: string }
  /** Accept and never answer (the plugin's timeout). */
  | { hang: true }
  /** Send these bytes verbatim. */
  | { raw: string };

export interface FakeCniAgent {
  socketPath: string;
  requests: RecordedRequest[];
  /** Replaces the answer policy; it may answer later (a Promise), as the real agent does. */
  respond(fn: (req: RecordedRequest) => FakeAnswer | Promise<FakeAnswer>): void;
  close(): Promise<void>;
}

function parseArgs(args: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const kv of args.split(';')) {
    const i = kv.indexOf('=');
    if (i > 0) out[kv.slice(0, i)] = kv.slice(i + 1);
  }
  return out;
}

/** What the real agent answers when all is well: ADD passes prevResult on. */
export function defaultAnswer(req: CniRequest): FakeAnswer {
  if (req.command === 'ADD') {
    const prev = req.config.prevResult ?? { cniVersion: req.config.cniVersion ?? '1.0.0' };
    return { ok: true, body: JSON.stringify(prev) };
  }
  return { ok: true, body: '' };
}

/** Starts the fake on a socket in a fresh temp dir (or at `socketPath`). */
export async function startFakeCniAgent(socketPath?: string): Promise<FakeCniAgent> {
  const dir = socketPath ? undefined : mkdtempSync(join(tmpdir(), 'nm-fake-agent-'));
  const path = socketPath ?? join(dir!, 'cni.sock');
  const requests: RecordedRequest[] = [];
  let policy: (req: RecordedRequest) => FakeAnswer | Promise<FakeAnswer> = defaultAnswer;
  const sockets = new Set<Socket>();
  // allowHalfOpen: the plugin shuts down its write side after the request; without this,
  // Node ends our side too as soon as the request's EOF arrives, and an answer sent after
  // any asynchronous work is lost (the plugin reads an empty answer).
  const server: Server = createServer({ allowHalfOpen: true }, (sock) => {
    sockets.add(sock);
    sock.on('close', () => sockets.delete(sock));
    sock.on('error', () => undefined);
    const chunks: Buffer[] = [];
    sock.on('data', (b) => chunks.push(b));
    sock.on('end', () => {
      const raw = Buffer.concat(chunks).toString('utf8');
      let req: CniRequest;
      try {
        req = JSON.parse(raw) as CniRequest;
      } catch (e) {
        sock.end(`ERR 6\n${JSON.stringify({ cniVersion: '1.0.0', code: 6, msg: `fake agent: bad request: ${(e as Error).message}` })}\n`);
        return;
      }
      const rec: RecordedRequest = { ...req, argsMap: parseArgs(req.args ?? ''), raw };
      requests.push(rec);
      void Promise.resolve(policy(rec)).then((a) => {
        if ('hang' in a) return;
        if ('raw' in a) sock.end(a.raw);
        else if (a.ok) sock.end(`OK\n${a.body ?? ''}`);
        else sock.end(`ERR ${a.code}\n${a.body ?? ''}`);
      });
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(path, () => resolve());
  });
  return {
    socketPath: path,
    requests,
    respond(fn) {
      policy = fn;
    },
    async close() {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
      if (dir) rmSync(dir, { recursive: true, force: true });
    },
  };
}
