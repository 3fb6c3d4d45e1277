// `make soak`: 10⁶ short TCP connections through the node agent, apart from the tests. On the
// embedded single-node cluster, a Python loader in a mesh client pod opens N connections
// (HTTP/1.0, one request each) to nginx in a mesh server pod, through the agent's capture and
// its same-node path, with bounded concurrency. The agent's open fds, RSS and V8 heap are sampled
// before, during and after; the figures go to the `soak` section of docs/benchmarks.md.
// Bounded in count (--connections) and in time (--max-minutes); always tears the cluster down.
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { cliPath, progress, up } from '../cluster/index.js';
import { agentPaths } from '../net/index.js';
import { listPods } from '../sim/index.js';
import { MeshTeardown, runMain, writeBenchSection } from './run.js';
import { agentCounters, LOADER_PY, sampleAgent, type AgentCounters, type LoaderLine, type Sample } from './soak-probe.js';
import { report, SECTION, type SoakResult } from './soak-report.js';

const HELP = `Usage: node dist/bench/soak.js [options]   (make soak; needs root)

Opens N short TCP connections from a mesh client pod to a mesh server pod through the node
agent on the embedded single-node cluster, and records the agent's open fds, RSS and V8 heap
at the start and end in docs/benchmarks.md (section "soak").

Options:
  --connections N   connections to open (default 1000000)
  --concurrency C   connections in flight at once (default 64)
  --quick           20,000 connections; prints the figures, does not write docs/benchmarks.md
  --max-minutes M   hard cap on the load phase (default 60); the run stops and fails there
  --no-write        do not write docs/benchmarks.md
  -h, --help        this text
`;

const WARMUP = 5_000;
const SAMPLE_EVERY_MS = 5_000;
const SETTLE_MS = 15_000;

function config(dir: string): void {
  writeFileSync(
    join(dir, 'nginx.conf'),
    `worker_processes 1;
pid ${dir}/nginx.pid;
error_log stderr;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path ${dir}/nginx-body;
  proxy_temp_path ${dir}/nginx-proxy;
  fastcgi_temp_path ${dir}/nginx-fastcgi;
  uwsgi_temp_path ${dir}/nginx-uwsgi;
  scgi_temp_path ${dir}/nginx-scgi;
  server { listen 8080; location / { default_type text/plain; return 200 "ok\\n"; } }
}
`,
  );
  writeFileSync(join(dir, 'loader.py'), LOADER_PY);
  writeFileSync(
    join(dir, 'pods.yaml'),
    `apiVersion: v1
kind: Namespace
metadata: { name: soak, labels: { nodemesh.io/dataplane-mode: ambient } }
---
apiVersion: v1
kind: Pod
metadata: { name: server, namespace: soak, labels: { app: server } }
spec:
  containers:
  - { name: nginx, command: [nginx, -p, ., -c, nginx.conf, -e, stderr, -g, "daemon off;"], ports: [{ containerPort: 8080 }] }
---
apiVersion: v1
kind: Pod
metadata: { name: client, namespace: soak }
spec:
  containers:
  - { name: idle, command: [sleep, infinity] }
`,
  );
}

/** Runs the loader in the client pod; calls `onLine` for each progress line; resolves with the last. */
function runLoader(sd: string, dir: string, ip: string, n: number, conc: number, seconds: number, onLine: (l: LoaderLine) => void): { done: Promise<LoaderLine>; kill(): void } {
  const child = spawn(cliPath, ['sim', 'exec', '--state-dir', sd, 'soak/client', '--', 'python3', join(dir, 'loader.py'), ip, '8080', String(n), String(conc), String(seconds)], { stdio: ['ignore', 'pipe', 'pipe'] });
  let last: LoaderLine | undefined;
  let buf = '';
  let err = '';
  child.stdout.setEncoding('utf8');
  child.stdout.on('data', (d: string) => {
    buf += d;
    for (let i = buf.indexOf('\n'); i >= 0; i = buf.indexOf('\n')) {
      const line = buf.slice(0, i).trim();
      buf = buf.slice(i + 1);
      if (!line.startsWith('{')) continue;
      last = JSON.parse(line) as LoaderLine;
      onLine(last);
    }
  });
  child.stderr.on('data', (d: Buffer) => (err = (err + d.toString()).slice(-4000)));
  const done = new Promise<LoaderLine>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code, signal) => {
      if (code === 0 && last?.final) resolve(last);
      else reject(new Error(`the loader exited with ${signal ?? code} after ${last?.done ?? 0} connections: ${err.trim()}`));
    });
  });
  return { done, kill: () => child.kill('SIGKILL') };
}

function agentPid(sd: string): number {
  const pid = Number(readFileSync(agentPaths(sd).pidFile, 'utf8').trim());
  if (!Number.isInteger(pid) || pid <= 0 || !existsSync(`/proc/${pid}`)) throw new Error(`the agent is not running (pid file ${agentPaths(sd).pidFile})`);
  return pid;
}

async function soak(sd: string, dir: string, n: number, conc: number, maxMinutes: number): Promise<SoakResult> {
  await up(dir, sd);
  const server = (await listPods({ stateDir: sd })).find((p) => p.namespace === 'soak' && p.name === 'server');
  if (!server) throw new Error('the server pod did not come up');
  const pid = agentPid(sd);
  const samples: Sample[] = [];
  const idle = await sampleAgent(pid, 0, 0);
  progress(`warm-up: ${WARMUP} connections`);
  await runLoader(sd, dir, server.ip, WARMUP, conc, 300, () => {}).done;
  const countersBefore: AgentCounters = await agentCounters();
  const start = await sampleAgent(pid, 0, 0);
  samples.push(start);
  progress(`soak: ${n.toLocaleString('en')} connections, ${conc} at a time, at most ${maxMinutes} min`);
  const t0 = Date.now();
  let done = 0;
  let lastLog = 0;
  const loader = runLoader(sd, dir, server.ip, n, conc, maxMinutes * 60, (l) => {
    done = l.done;
    if (Date.now() - lastLog > 30_000) {
      lastLog = Date.now();
      const s = samples[samples.length - 1]!;
      progress(`${l.done.toLocaleString('en')} / ${n.toLocaleString('en')} (${Math.round(l.done / Math.max(l.seconds, 0.001))}/s), ${l.errors} errors; agent fds ${s.fds}, RSS ${s.rssMb.toFixed(0)} MB, heap ${s.heapUsedMb.toFixed(0)} MB`);
    }
  });
  const timer = setInterval(() => {
    void sampleAgent(pid, (Date.now() - t0) / 1000, done).then((s) => samples.push(s), () => {});
  }, SAMPLE_EVERY_MS);
  // The hard cap: the loader has its own deadline; this one kills it if it overruns.
  const cap = setTimeout(() => loader.kill(), (maxMinutes * 60 + 60) * 1000);
  let final: LoaderLine;
  try {
    final = await loader.done;
  } finally {
    clearInterval(timer);
    clearTimeout(cap);
  }
  const seconds = (Date.now() - t0) / 1000;
  const end = await sampleAgent(pid, seconds, final.done);
  samples.push(end);
  progress(`load done: ${final.done.toLocaleString('en')} connections in ${seconds.toFixed(0)} s, ${final.errors} errors; idling ${SETTLE_MS / 1000} s`);
  await new Promise((r) => setTimeout(r, SETTLE_MS));
  const settled = await sampleAgent(pid, (Date.now() - t0) / 1000, final.done);
  const countersAfter = await agentCounters();
  const aliveAfter = existsSync(`/proc/${pid}`) && agentPid(sd) === pid;
  return { n, conc, warmup: WARMUP, final, seconds, idle, start, end, settled, samples, countersBefore, countersAfter, aliveAfter, maxMinutes };
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      connections: { type: 'string' },
      concurrency: { type: 'string' },
      quick: { type: 'boolean' },
      'max-minutes': { type: 'string' },
      'no-write': { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    process.stdout.write(HELP);
    return 0;
  }
  const int = (v: string | undefined, d: number, what: string) => {
    const x = v === undefined ? d : Number(v);
    if (!Number.isInteger(x) || x < 1) throw new Error(`${what} must be a positive integer, got ${JSON.stringify(v)}`);
    return x;
  };
  const n = int(values.connections, values.quick ? 20_000 : 1_000_000, '--connections');
  const conc = int(values.concurrency, 64, '--concurrency');
  const maxMinutes = int(values['max-minutes'], 60, '--max-minutes');
  const write = !values.quick && !values['no-write'];
  if (process.getuid?.() !== 0) {
    process.stderr.write('soak: needs root (network namespaces, eBPF); run `make soak` as root\n');
    return 1;
  }
  const sd = mkdtempSync(join(tmpdir(), 'nm-soak-'));
  const dir = mkdtempSync(join(tmpdir(), 'nm-soak-cfg-'));
  config(dir);
  const teardown = new MeshTeardown('soak', sd, [dir]);
  try {
    const r = await soak(sd, dir, n, conc, maxMinutes);
    const section = report(r, { machine: `${cpus().length} vCPU (${cpus()[0]?.model ?? '?'})`, command: values.quick ? 'make soak ARGS=--quick' : `make soak${n === 1_000_000 ? '' : ` ARGS="--connections ${n}"`}` });
    process.stdout.write(`\n${section}\n`);
    if (write) {
      const file = writeBenchSection(SECTION, section);
      process.stdout.write(`written to ${file}\n`);
    }
    return r.final.done === n && r.aliveAfter ? 0 : 1;
  } finally {
    await teardown.finish();
  }
}

runMain('soak', main);
