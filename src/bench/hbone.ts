// `node dist/bench/hbone.js`: bulk throughput of one HBONE tunnel on loopback, with Node's
// default HTTP/2 windows and with the tuned ones, against an mTLS tunnel without HTTP/2
// measured in the same run. Prints a Markdown table of medians and writes the hbone section of
// docs/benchmarks.md (not with --quick).
//
// The receiving side (HBONE server or TLS terminator, relaying to a TCP sink app) runs in a
// worker thread, so each side has its own event loop and core, as two nodes would.
// Environment: NODEMESH_BENCH_RUNS (default 3, or --runs), NODEMESH_BENCH_HBONE_MIB (default 1024).
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer as createTcpServer, Socket, type AddressInfo } from 'node:net';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect as tlsConnect, createServer as createTlsServer, type TLSSocket } from 'node:tls';
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import { pino } from 'pino';
import { CertificateAuthority } from '../controlplane/index.js';
import { createCsr, exportPrivateKeyPem, generateKeyPair } from '../identity/index.js';
import { connectFd, DEFAULT_TUNING, HbonePool, HboneServer, NODE_DEFAULT_TUNING, relay, type HboneCredentials, type HboneTuning } from '../proxy/index.js';
import { runMain, writeBenchSection } from './run.js';
import { median, parseBenchArgs } from './tools.js';

const HELP = `Usage: node dist/bench/hbone.js [--quick] [--runs N]

The HBONE tunnel alone, on loopback, unprivileged: one upload per run through an mTLS tunnel
without HTTP/2 (the baseline) and through HBONE with Node's default HTTP/2 windows and with
the tuned ones, the receiving side in a worker thread (its own event loop and core). Medians
over the runs; writes the hbone section of docs/benchmarks.md.

  --quick        1 run of 256 MiB per path; prints the figures, does not write the docs
  --runs N       runs (default 3, or NODEMESH_BENCH_RUNS); NODEMESH_BENCH_HBONE_MIB sets the
                 upload size (default 1024). --seconds is accepted and ignored: each run moves
                 a fixed size
  -h, --help     this text
`;
// The worker (the receiving side) takes no options.
const ARGS = isMainThread ? parseBenchArgs(HELP) : undefined;
const RUNS = ARGS?.runs ?? 0;
const MIB = ARGS?.quick ? 256 : Number(process.env.NODEMESH_BENCH_HBONE_MIB ?? 1024);
const SECTION = 'hbone';
const TD = 'cluster.local';
const SERVER_ID = `spiffe://${TD}/ns/bench/sa/server`;
const CLIENT_ID = `spiffe://${TD}/ns/bench/sa/client`;
const CHUNK = 64 * 1024;
const silent = pino({ level: 'silent' });

interface Variant {
  name: string;
  /** Undefined: the mTLS tunnel without HTTP/2. */
  tuning?: HboneTuning;
}

const VARIANTS: Variant[] = [
  { name: 'mTLS tunnel, no HTTP/2 (baseline)' },
  { name: 'HBONE, Node defaults: 64 KiB windows, 16 KiB frames', tuning: NODE_DEFAULT_TUNING },
  { name: 'HBONE, 4 MiB stream / 16 MiB conn windows, 16 KiB frames', tuning: { ...DEFAULT_TUNING, maxFrameSize: 16 * 1024 } },
  { name: 'HBONE, 4 MiB / 16 MiB windows, 64 KiB frames (default)', tuning: DEFAULT_TUNING },
  { name: 'HBONE, 4 MiB / 16 MiB windows, 1 MiB frames', tuning: { ...DEFAULT_TUNING, maxFrameSize: 1024 * 1024 } },
];

interface Setup {
  server: HboneCredentials;
  client: HboneCredentials;
}

/** The receiving node: a sink app, and per variant an HBONE server or a TLS terminator. */
async function receiver(certs: Setup): Promise<void> {
  const sink = createTcpServer({ allowHalfOpen: true }, (s) => {
    let n = 0;
    s.on('data', (c: Buffer) => (n += c.length));
    s.on('end', () => s.end(String(n)));
    s.on('error', () => {});
  });
  await new Promise<void>((r) => sink.listen(0, '127.0.0.1', r));
  const sinkPort = (sink.address() as AddressInfo).port;
  const toSink = () => connectFd(new Socket({ allowHalfOpen: true }), { ip: '127.0.0.1', port: sinkPort }, 5000);
  const ports: number[] = [];
  for (const v of VARIANTS) {
    if (!v.tuning) {
      const srv = createTlsServer({ cert: certs.server.certChainPem, key: certs.server.keyPem, ca: certs.server.rootsPem, requestCert: true, rejectUnauthorized: true, minVersion: 'TLSv1.3', allowHalfOpen: true }, (tls) => {
        void toSink().then((up) => relay(tls as unknown as Socket, up));
      });
      await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
      ports.push((srv.address() as AddressInfo).port);
      continue;
    }
    const srv = new HboneServer({
      credentials: () => certs.server,
      trustDomain: TD,
      localAddresses: ['127.0.0.1'],
      authorize: () => ({ allow: true }),
      connectUpstream: () => toSink(),
      tuning: v.tuning,
      log: silent,
    });
    ports.push((await srv.listen({ host: '127.0.0.1', port: 0 })).port);
  }
  ports.push(sinkPort);
  parentPort!.postMessage(ports);
}

/** Writes `bytes` into `dst` with backpressure, ends it, and resolves the sink's count. */
function push(dst: NodeJS.ReadWriteStream & { destroy(): void }, bytes: number): Promise<{ seconds: number; count: number }> {
  const chunk = Buffer.alloc(CHUNK, 0x5a);
  return new Promise((resolve, reject) => {
    let answer = '';
    dst.on('data', (c: Buffer) => (answer += c.toString()));
    dst.on('error', reject);
    const t0 = process.hrtime.bigint();
    dst.on('end', () => resolve({ seconds: Number(process.hrtime.bigint() - t0) / 1e9, count: Number(answer) }));
    let sent = 0;
    const pump = (): void => {
      while (sent < bytes) {
        sent += chunk.length;
        if (!dst.write(chunk)) {
          dst.once('drain', pump);
          return;
        }
      }
      dst.end();
    };
    pump();
  });
}

async function measure(v: Variant, port: number, sinkPort: number, certs: Setup, bytes: number): Promise<{ gbps: number; cipher: string }> {
  if (!v.tuning) {
    const tls: TLSSocket = tlsConnect({ host: '127.0.0.1', port, cert: certs.client.certChainPem, key: certs.client.keyPem, ca: certs.client.rootsPem, minVersion: 'TLSv1.3', checkServerIdentity: () => undefined });
    await new Promise((r, j) => tls.once('secureConnect', r).once('error', j));
    tls.setNoDelay(true);
    const cipher = tls.getCipher().name;
    const r = await push(tls, bytes);
    tls.destroy();
    if (r.count !== bytes) throw new Error(`the sink counted ${r.count} bytes, expected ${bytes}`);
    return { gbps: (bytes * 8) / r.seconds / 1e9, cipher };
  }
  const pool = new HbonePool({ tuning: v.tuning, log: silent });
  try {
    const stream = await pool.connect({
      source: { identity: CLIENT_ID, ...certs.client },
      destIdentity: SERVER_ID,
      destAddr: { ip: '127.0.0.1', port },
      target: { ip: '127.0.0.1', port: sinkPort },
      forwardedFor: '127.0.0.1',
    });
    const r = await push(stream, bytes);
    if (r.count !== bytes) throw new Error(`the sink counted ${r.count} bytes, expected ${bytes}`);
    return { gbps: (bytes * 8) / r.seconds / 1e9, cipher: 'same session cipher' };
  } finally {
    await pool.close();
  }
}

async function issue(ca: CertificateAuthority, id: string): Promise<HboneCredentials> {
  const keys = await generateKeyPair();
  const [leaf, root] = await ca.sign(await createCsr(keys, id), 3600, () => undefined);
  return { certChainPem: leaf!, keyPem: await exportPrivateKeyPem(keys.privateKey), rootsPem: root! };
}

async function main(): Promise<number> {
  if (!ARGS) return 0;
  if (!Number.isInteger(MIB) || MIB < 1) {
    process.stderr.write(`bench: NODEMESH_BENCH_HBONE_MIB must be a positive integer, got ${JSON.stringify(process.env.NODEMESH_BENCH_HBONE_MIB)}\n`);
    return 2;
  }
  const t0 = Date.now();
  const dir = mkdtempSync(join(tmpdir(), 'nodemesh-bench-hbone-'));
  let certs: Setup;
  try {
    const ca = await CertificateAuthority.open({ stateDir: dir, trustDomain: TD, logger: silent });
    certs = { server: await issue(ca, SERVER_ID), client: await issue(ca, CLIENT_ID) };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  const worker = new Worker(new URL(import.meta.url), { workerData: certs });
  const results = VARIANTS.map(() => [] as number[]);
  let cipher = '';
  try {
    const ports = await new Promise<number[]>((resolve, reject) => worker.once('message', resolve).once('error', reject));
    const sinkPort = ports.at(-1)!;
    const bytes = MIB * 1024 * 1024;
    process.stderr.write(`HBONE bench: ${RUNS} runs of ${MIB} MiB per path, node ${process.version}, ${availableParallelism()} CPUs\n`);
    // Runs are interleaved so that a noisy moment hurts every path alike.
    for (let run = 0; run < RUNS; run++) {
      for (const [i, v] of VARIANTS.entries()) {
        const r = await measure(v, ports[i]!, sinkPort, certs, bytes);
        if (!v.tuning) cipher = r.cipher;
        results[i]!.push(r.gbps);
        process.stderr.write(`  run ${run + 1}/${RUNS} ${v.name}: ${r.gbps.toFixed(2)} Gbit/s\n`);
      }
    }
  } finally {
    await worker.terminate();
  }
  const base = median(results[0]!);
  const lines = [
    '## The HBONE tunnel alone (loopback, no network namespaces)',
    '',
    `Command: \`make bench\` (\`node dist/bench/hbone.js\`; ${RUNS} runs, medians; the run took ${((Date.now() - t0) / 60_000).toFixed(1)} min).`,
    `Machine: ${availableParallelism()} vCPU, shared and noisy, Node ${process.versions.node}. Measured ${new Date().toISOString().slice(0, 10)}.`,
    '',
    `One ${MIB} MiB upload per run through a loopback tunnel to a TCP sink, the receiving side in a worker thread; medians of ${RUNS} (${cipher}).`,
    '',
    '| path | Gbit/s | runs | vs mTLS baseline |',
    '|---|---|---|---|',
    ...VARIANTS.map((v, i) => {
      const m = median(results[i]!);
      return `| ${v.name} | ${m.toFixed(2)} | ${results[i]!.map((x) => x.toFixed(2)).join(', ')} | ${(m / base).toFixed(2)}× |`;
    }),
  ];
  const section = lines.join('\n') + '\n';
  if (ARGS.quick) {
    process.stdout.write(`\n${section}\n(--quick: docs/benchmarks.md not written)\n`);
    return 0;
  }
  const file = writeBenchSection(SECTION, section);
  process.stdout.write(`\n${section}\nwritten to ${file}\n`);
  return 0;
}

if (isMainThread) {
  runMain('hbone bench', main);
} else {
  receiver(workerData as Setup).catch((err: unknown) => {
    process.stderr.write(`hbone bench receiver failed: ${(err as Error).stack ?? String(err)}\n`);
    process.exit(1);
  });
}
