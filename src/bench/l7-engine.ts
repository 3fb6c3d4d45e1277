// `node dist/bench/l7-engine.js`: what an HTTP/1.1 hop costs in Node, measured before choosing
// the L7 engine's design (issue 9). nginx serves 1 KiB on loopback; wrk -t1 -c16 (keep-alive)
// drives it directly, through a Node TCP pipe (the L4 ceiling), through a naive node:http
// reverse proxy with a keep-alive Agent, through node:http with undici's Pool as the client
// side, through src/l7's engine, and through nginx as a reverse proxy (the native reference).
// Medians of the runs, req/s against direct from the same run, and the proxy process's CPU per
// 1,000 requests. Prints Markdown; writes nothing.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { request as httpRequest, Agent, createServer as createHttpServer, type IncomingHttpHeaders } from 'node:http';
import { connect, createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { HttpEngine, type RequestRecord, type SessionHooks, type UpstreamTarget } from '../l7/index.js';
import { BENCH_OPTIONS_HELP, cpuSeconds, median, parseBenchArgs, parseWrk } from './tools.js';

const HELP = `Usage: node dist/bench/l7-engine.js [--quick] [--runs N] [--seconds S]

The cost of one HTTP/1.1 proxy hop on loopback, to choose the L7 engine's design: nginx serving
1 KiB, driven by wrk -t1 -c16 (keep-alive) directly, through a Node TCP pipe (no HTTP: the
ceiling of any Node hop), through a naive node:http reverse proxy (keep-alive Agent), through
node:http + undici Pool, through the src/l7 engine, and through nginx as a reverse proxy. Prints req/s (median), the ratio to direct from the same run, and the proxy
process's CPU per 1,000 requests. Run it alone: \`flock /tmp/nm-bench.lock node dist/bench/l7-engine.js\`.
Writes nothing; docs/l7.md records its figures.

${BENCH_OPTIONS_HELP}`;

const HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade', 'te', 'host']);

type Variant = 'direct' | 'tcp-pipe' | 'node-http' | 'undici' | 'engine' | 'nginx-proxy';
const VARIANTS: { name: Variant; label: string }[] = [
  { name: 'direct', label: 'direct (wrk → nginx)' },
  { name: 'tcp-pipe', label: 'Node TCP pipe, no HTTP (the L4 ceiling)' },
  { name: 'node-http', label: 'node:http reverse proxy, keep-alive Agent' },
  { name: 'undici', label: 'node:http server + undici Pool client' },
  { name: 'engine', label: 'src/l7 engine (llhttp, pooled upstream)' },
  { name: 'nginx-proxy', label: 'nginx reverse proxy (keepalive upstream)' },
];

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const p = (s.address() as AddressInfo).port;
      s.close(() => resolve(p));
    });
  });
}

function endToEnd(h: IncomingHttpHeaders): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  for (const [k, v] of Object.entries(h)) if (v !== undefined && !HOP.has(k)) out[k] = v;
  return out;
}

/** The proxy child: one of the Node variants listening on `port`, forwarding to nginx at `upstream`. */
async function serve(variant: Variant, port: number, upstream: number): Promise<void> {
  const ready = (): void => {};
  if (variant === 'tcp-pipe') {
    createServer({ noDelay: true }, (c) => {
      const u = connect({ host: '127.0.0.1', port: upstream, noDelay: true });
      c.pipe(u).on('error', () => c.destroy());
      u.pipe(c).on('error', () => u.destroy());
      c.on('error', () => u.destroy());
      u.on('error', () => c.destroy());
    }).listen(port, '127.0.0.1', ready);
    return;
  }
  if (variant === 'node-http') {
    const agent = new Agent({ keepAlive: true, maxSockets: 64 });
    createHttpServer((req, res) => {
      const up = httpRequest({ host: '127.0.0.1', port: upstream, method: req.method, path: req.url, headers: req.headers, agent }, (ur) => {
        res.writeHead(ur.statusCode ?? 502, ur.headers);
        ur.pipe(res);
      });
      up.on('error', () => res.destroy());
      req.pipe(up);
    }).listen(port, '127.0.0.1', ready);
    return;
  }
  if (variant === 'undici') {
    let undici: typeof import('undici');
    try {
      undici = await import('undici');
    } catch {
      throw new Error('undici is not installed (it comes with @kubernetes/client-node); run npm ci');
    }
    const pool = new undici.Pool(`http://127.0.0.1:${upstream}`, { connections: 64, pipelining: 1 });
    createHttpServer((req, res) => {
      const hasBody = req.headers['content-length'] !== undefined || req.headers['transfer-encoding'] !== undefined;
      pool
        .stream({ path: req.url ?? '/', method: req.method as 'GET', headers: endToEnd(req.headers) as Record<string, string>, body: hasBody ? req : null }, ({ statusCode, headers }) => {
          res.writeHead(statusCode, endToEnd(headers as IncomingHttpHeaders));
          return res;
        })
        .catch(() => res.destroy());
    }).listen(port, '127.0.0.1', ready);
    return;
  }
  if (variant === 'engine') {
    const engine = new HttpEngine();
    const open = () =>
      new Promise<import('node:net').Socket>((resolve, reject) => {
        const s = connect({ host: '127.0.0.1', port: upstream, allowHalfOpen: true, noDelay: true });
        s.once('connect', () => resolve(s));
        s.once('error', reject);
      });
    const decision: UpstreamTarget = { upstream: `127.0.0.1:${upstream}`, open };
    // A telemetry hook as the proxy will have one: it counts, and non-2xx are reported below.
    let bad = 0;
    const hooks: SessionHooks = { route: () => decision, onRequest: (r: RequestRecord) => void (r.status === 200 || bad++) };
    process.on('SIGTERM', () => {
      if (bad) process.stderr.write(`engine: ${bad} requests were not answered 200\n`);
      process.exit(0);
    });
    createServer({ allowHalfOpen: true, noDelay: true }, (sock) => {
      void engine.serve(sock, hooks);
    }).listen(port, '127.0.0.1', ready);
    return;
  }
  throw new Error(`no Node proxy variant ${variant}`);
}

/**
 * nginx serving 1 KiB on `port`, or with `upstream`, proxying to it over keep-alive connections.
 * pods.ts (the mesh benchmarks' config) is loaded here only: the proxy children need none of it.
 */
async function nginxConf(dir: string, name: string, port: number, upstream?: number): Promise<string> {
  const { BODY, nginxConfig } = await import('./pods.js');
  const location = upstream
    ? 'location / { proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection ""; }'
    : `location / { default_type text/plain; return 200 "${BODY}"; }`;
  const http = upstream ? `upstream backend { server 127.0.0.1:${upstream}; keepalive 64; keepalive_requests 1000000; }` : '';
  const file = join(dir, `${name}.conf`);
  writeFileSync(file, nginxConfig(dir, name, `listen 127.0.0.1:${port};\n    ${location}`, http));
  return file;
}

/** nginx's worker pids (children of its master), whose CPU is the proxy's. */
function childrenOf(pid: number): number[] {
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

async function waitHttp(port: number): Promise<void> {
  for (let i = 0; i < 100; i++) {
    const ok = await new Promise<boolean>((resolve) => {
      const r = httpRequest({ host: '127.0.0.1', port, path: '/', agent: false }, (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode === 200));
      });
      r.on('error', () => resolve(false));
      r.end();
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`nothing answers HTTP on 127.0.0.1:${port}`);
}

interface Sample {
  rps: number;
  /** Proxy CPU milliseconds per 1,000 requests; NaN for direct. */
  cpuMsPer1k: number;
  errors: number;
}

function wrk(port: number, seconds: number): ReturnType<typeof parseWrk> {
  const r = spawnSync('wrk', ['-t1', '-c16', `-d${seconds}s`, `http://127.0.0.1:${port}/`], { encoding: 'utf8', timeout: (seconds + 30) * 1000 });
  if (r.status !== 0) throw new Error(`wrk failed (exit ${r.status}): ${r.stderr}${r.stdout}`);
  return parseWrk(r.stdout);
}

function measure(port: number, pids: number[], seconds: number): Sample {
  const cpu = (): number => pids.reduce((a, p) => a + cpuSeconds(p), 0);
  const c0 = cpu();
  const w = wrk(port, seconds);
  const used = cpu() - c0;
  return { rps: w.requestsPerSec, cpuMsPer1k: pids.length ? (used * 1000) / (w.requests / 1000) : NaN, errors: w.errors };
}

async function main(): Promise<void> {
  const args = parseBenchArgs(HELP);
  if (!args) return;
  const dir = mkdtempSync(join(tmpdir(), 'nm-l7-bench-'));
  const children: ChildProcess[] = [];
  try {
    const backendPort = await freePort();
    const start = (argv: string[]): ChildProcess => {
      const c = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'ignore', 'inherit'] });
      children.push(c);
      return c;
    };
    const backend = start(['nginx', '-p', dir, '-c', await nginxConf(dir, 'backend', backendPort), '-e', 'stderr', '-g', 'daemon off;']);
    await waitHttp(backendPort);
    const ports = new Map<Variant, { port: number; pids: number[] }>();
    ports.set('direct', { port: backendPort, pids: [] });
    const nginxProxyPort = await freePort();
    const nginxProxy = start(['nginx', '-p', dir, '-c', await nginxConf(dir, 'proxy', nginxProxyPort, backendPort), '-e', 'stderr', '-g', 'daemon off;']);
    await waitHttp(nginxProxyPort);
    ports.set('nginx-proxy', { port: nginxProxyPort, pids: childrenOf(nginxProxy.pid!) });
    for (const v of ['tcp-pipe', 'node-http', 'undici', 'engine'] as const) {
      const port = await freePort();
      const c = start([process.execPath, fileURLToPath(import.meta.url), '--serve', v, String(port), String(backendPort)]);
      await waitHttp(port);
      ports.set(v, { port, pids: [c.pid!] });
    }
    void backend;
    const samples = new Map<Variant, Sample[]>(VARIANTS.map((v) => [v.name, []]));
    // Warm every path (JIT, pools) before the first measured run.
    for (const v of VARIANTS) wrk(ports.get(v.name)!.port, 1);
    for (let run = 1; run <= args.runs; run++) {
      for (const v of VARIANTS) {
        process.stderr.write(`run ${run}/${args.runs}: ${v.label}\n`);
        const p = ports.get(v.name)!;
        samples.get(v.name)!.push(measure(p.port, p.pids, args.seconds));
      }
    }
    const direct = median(samples.get('direct')!.map((s) => s.rps));
    const rows = VARIANTS.map((v) => {
      const s = samples.get(v.name)!;
      const rps = median(s.map((x) => x.rps));
      const cpu = median(s.map((x) => x.cpuMsPer1k));
      const errors = s.reduce((a, x) => a + x.errors, 0);
      return `| ${v.label} | ${Math.round(rps).toLocaleString('en-US')} | ${(rps / direct).toFixed(2)}× | ${Number.isNaN(cpu) ? '—' : cpu.toFixed(1)} | ${errors} |`;
    });
    process.stdout.write(`wrk -t1 -c16 -d${args.seconds}s, keep-alive, 1 KiB responses from nginx on loopback; medians of ${args.runs} run(s).

| path | req/s | × direct | proxy CPU ms per 1,000 req | wrk errors |
|---|---|---|---|---|
${rows.join('\n')}
`);
  } finally {
    for (const c of children) if (c.exitCode === null && c.pid) process.kill(c.pid, 'SIGTERM');
    await new Promise((r) => setTimeout(r, 300));
    rmSync(dir, { recursive: true, force: true });
  }
}

if (process.argv[2] === '--serve') {
  const [variant, port, upstream] = process.argv.slice(3);
  serve(variant as Variant, Number(port), Number(upstream)).catch((err: unknown) => {
    process.stderr.write(`${String(err)}\n`);
    process.exit(1);
  });
} else {
  main().catch((err: unknown) => {
    process.stderr.write(`${err instanceof Error ? err.stack : String(err)}\n`);
    process.exitCode = 1;
  });
}
