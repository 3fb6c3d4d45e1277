// A WebSocket client program for simulated pods (Node's global WebSocket): it opens `url`, takes
// the echo's greeting, sends a text and a binary message, checks their echoes, closes, and prints
// one line of JSON saying what it saw. Built to dist-test/ by tsconfig.standin.json.
import { createHash } from 'node:crypto';
import { realpathSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

/** Where `make ts` puts this program. */
export const WS_CLIENT_MAIN = fileURLToPath(new URL('../../dist-test/test/helpers/ws-client-main.js', import.meta.url));

export interface WsClientResult {
  /** The greeting the server sent first, parsed. */
  hello?: Record<string, unknown>;
  /** The text echoed back. */
  text?: string;
  /** The binary echo: its size, sha256, and whether it is byte for byte what was sent. */
  binary?: { bytes: number; sha256: string; same: boolean };
  sentSha256: string;
  close?: { code: number; reason: string; wasClean: boolean };
  error?: string;
}

/** `n` bytes that differ from position to position, so a lost or moved chunk shows. */
export function pattern(n: number): Uint8Array {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = (i * 7 + (i >> 10)) % 251;
  return b;
}

const sha = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');

/** Runs the exchange against `url`; never rejects (a failure is the result's `error`). */
export function runWsClient(url: string, binaryBytes: number, timeoutMs = 20_000): Promise<WsClientResult> {
  const sent = pattern(binaryBytes);
  const out: WsClientResult = { sentSha256: sha(sent) };
  return new Promise((resolve) => {
    const timer = setTimeout(() => finish(`timed out after ${timeoutMs} ms`), timeoutMs);
    const finish = (error?: string): void => {
      clearTimeout(timer);
      if (error && !out.error) out.error = error;
      resolve(out);
    };
    let ws: WebSocket;
    try {
      ws = new WebSocket(url);
    } catch (e) {
      return finish((e as Error).message);
    }
    ws.binaryType = 'arraybuffer';
    const text = 'hello through the mesh: ünïcødé ✓';
    ws.onmessage = (ev: MessageEvent) => {
      const data: unknown = ev.data;
      if (typeof data === 'string' && out.hello === undefined) {
        out.hello = JSON.parse(data) as Record<string, unknown>;
        ws.send(text);
      } else if (typeof data === 'string') {
        out.text = data;
        ws.send(sent);
      } else {
        const got = new Uint8Array(data as ArrayBuffer);
        out.binary = { bytes: got.length, sha256: sha(got), same: Buffer.from(got).equals(Buffer.from(sent)) };
        ws.close(1000, 'done');
      }
    };
    ws.onerror = (ev: Event) => {
      out.error = (ev as Event & { message?: string }).message || 'websocket error';
    };
    ws.onclose = (ev: CloseEvent) => {
      out.close = { code: ev.code, reason: ev.reason, wasClean: ev.wasClean };
      finish();
    };
  });
}

async function main(): Promise<void> {
  const [url, bytes = String(1 << 20)] = process.argv.slice(2);
  if (!url || !/^\d+$/.test(bytes)) {
    process.stderr.write('Usage: node ws-client-main.js <ws://host:port/path> [binary message bytes, default 1048576]\n');
    process.exitCode = 2;
    return;
  }
  const r = await runWsClient(url, Number(bytes));
  process.stdout.write(`${JSON.stringify(r)}\n`);
  process.exitCode = r.error ? 1 : 0;
}

const entry = process.argv[1] ? realpathSync(process.argv[1]) : '';
if (entry === realpathSync(fileURLToPath(import.meta.url))) void main();
