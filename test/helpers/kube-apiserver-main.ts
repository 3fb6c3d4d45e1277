// The stand-in kube-apiserver (kube-apiserver.ts) as a process of its own, for the benchmarks:
// started from dist-test/ (tsconfig.standin.json, built by `make build`), it prints one JSON line
// {"url","kubeconfig","pid"} on stdout once it serves; forked with an IPC channel it also sends
// that, answers CPU, memory and request-log queries (so a benchmark can keep its cost apart from
// what it measures) and stops with the parent; otherwise it stops on SIGTERM/SIGINT.
import { subscribe } from 'node:diagnostics_channel';
import { realpathSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { startKubeStandIn, type KubeStandIn } from './kube-apiserver.js';

export const STANDIN_HELP = `Usage: node dist-test/test/helpers/kube-apiserver-main.js [options]

A stand-in for kube-apiserver (test/helpers/kube-apiserver.ts): no real API server can run on
these machines, so this one speaks the real wire protocol (discovery, list, watch with bookmarks,
create/update/patch/status/delete, TokenRequest, TokenReview) over HTTPS on 127.0.0.1, port 0,
with a fresh CA, admin token and ServiceAccount signing key. It keeps everything in memory and
does no admission, RBAC or schema validation; its cost per request is not a real apiserver's.

When it serves it prints one line of JSON on stdout:
  {"url":"https://127.0.0.1:<port>","kubeconfig":"<file>","pid":<pid>}
The kubeconfig (server, CA, admin bearer token) works with kubectl-like clients and with
nodemesh control-plane --kubeconfig <file>. SIGTERM or SIGINT stops it and deletes the file.

Options:
  --bookmark-every-ms N  how often a watch that asks for bookmarks gets one (default 1000)
  --empty                start without the namespaces, ServiceAccounts and kubernetes Service
                         a fresh cluster holds
  -h, --help             this text
`;

/** What the process announces when it serves. */
export interface StandInReady {
  type: 'ready';
  url: string;
  kubeconfig: string;
  pid: number;
}

/** Queries a parent may send over IPC, and the answers. */
export type StandInQuery = { type: 'cpu' } | { type: 'mem' } | { type: 'requests'; from: number };
export type StandInAnswer =
  | { type: 'cpu'; cpuMs: number }
  | { type: 'mem'; rss: number; heapUsed: number }
  /** The requests served from index `from` on (method, path with query, status), how many so far, and the connections accepted so far. */
  | { type: 'requests'; total: number; connections: number; requests: KubeStandIn['requests'] };

/** Connections this process's servers accepted (the API server is its only one): a client that does not reuse them shows here. */
let accepted = 0;
subscribe('net.server.socket', () => accepted++);

/** The answer to a query: CPU time so far; memory after a full GC when run with --expose-gc; the request log. */
export function answer(q: StandInQuery, api?: Pick<KubeStandIn, 'requests'>): StandInAnswer {
  if (q.type === 'cpu') {
    const u = process.cpuUsage();
    return { type: 'cpu', cpuMs: (u.user + u.system) / 1000 };
  }
  if (q.type === 'requests') {
    const all = api?.requests ?? [];
    return { type: 'requests', total: all.length, connections: accepted, requests: all.slice(Math.max(0, q.from)) };
  }
  (globalThis as { gc?: () => void }).gc?.();
  const m = process.memoryUsage();
  return { type: 'mem', rss: m.rss, heapUsed: m.heapUsed };
}

/** Parses the command line: the stand-in's options, `help`, or a usage error (a string to print). */
export function parseStandInArgs(argv: string[]): { help: true } | { help: false; bookmarkEveryMs: number; seed: boolean } | { error: string } {
  let values: { 'bookmark-every-ms'?: string; empty?: boolean; help?: boolean };
  try {
    ({ values } = parseArgs({ args: argv, options: { 'bookmark-every-ms': { type: 'string' }, empty: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } }, strict: true }));
  } catch (err) {
    return { error: `${(err as Error).message}\n\n${STANDIN_HELP}` };
  }
  if (values.help) return { help: true };
  const ms = Number(values['bookmark-every-ms'] ?? 1000);
  if (!Number.isInteger(ms) || ms < 10) return { error: `--bookmark-every-ms must be an integer of at least 10, got ${JSON.stringify(values['bookmark-every-ms'])}` };
  return { help: false, bookmarkEveryMs: ms, seed: values.empty !== true };
}

/** Starts the stand-in for `argv`: the running stand-in, or the exit code after --help (0) or a usage error (2). */
export async function runStandIn(argv: string[], out: { write(s: string): unknown }, err: { write(s: string): unknown }): Promise<{ api: KubeStandIn; ready: StandInReady } | { exitCode: number }> {
  const args = parseStandInArgs(argv);
  if ('error' in args) {
    err.write(`kube-apiserver stand-in: ${args.error}\n`);
    return { exitCode: 2 };
  }
  if (args.help) {
    out.write(STANDIN_HELP);
    return { exitCode: 0 };
  }
  const api = await startKubeStandIn({ bookmarkEveryMs: args.bookmarkEveryMs, seed: args.seed });
  const ready: StandInReady = { type: 'ready', url: api.url, kubeconfig: api.kubeconfigPath, pid: process.pid };
  out.write(`${JSON.stringify({ url: ready.url, kubeconfig: ready.kubeconfig, pid: ready.pid })}\n`);
  return { api, ready };
}

async function main(): Promise<void> {
  const started = await runStandIn(process.argv.slice(2), process.stdout, process.stderr);
  if ('exitCode' in started) {
    process.exitCode = started.exitCode;
    return;
  }
  const { api, ready } = started;
  process.send?.(ready);
  let stopping = false;
  const stop = (why: string): void => {
    if (stopping) return;
    stopping = true;
    process.stderr.write(`kube-apiserver stand-in: ${why}; stopping\n`);
    // close() ends every watch and connection and deletes the kubeconfig's directory.
    void api.close().then(() => process.exit(0), () => process.exit(1));
  };
  process.once('SIGTERM', () => stop('SIGTERM'));
  process.once('SIGINT', () => stop('SIGINT'));
  // Forked with an IPC channel (the benchmark): answer its queries, and never outlive it.
  if (process.send) {
    process.on('message', (q: StandInQuery) => {
      if (q?.type === 'cpu' || q?.type === 'mem' || q?.type === 'requests') process.send?.(answer(q, api));
    });
    process.once('disconnect', () => stop('the parent went away'));
  }
}

const entry = process.argv[1] ? realpathSync(process.argv[1]) : '';
if (entry === realpathSync(fileURLToPath(import.meta.url))) {
  main().catch((e: unknown) => {
    process.stderr.write(`kube-apiserver stand-in failed: ${(e as Error).stack ?? String(e)}\n`);
    process.exit(1);
  });
}
