// One xDS client in its own process, for the control-plane benchmark (bench/controlplane.ts):
// the real XdsClient and ProxyState over TLS with the token. It reports over the IPC channel
// when it is synced, when it applies each probe policy revision, the bytes it received and its
// memory, and exits when the parent says so or goes away.
import { readFileSync, realpathSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { log } from '../log.js';
import { ProxyState, type Authorization } from '../state/index.js';
import { adsService, codecs, protoRoot, readTokenFile, XdsClient, type PbDeltaResponse } from '../xds/index.js';

/** A probe policy names its revision in a principal: `…/sa/rev-<seq>`. */
export const PROBE_PRINCIPAL_RE = /\/sa\/rev-(\d+)$/;

export interface MemoryReport {
  type: 'mem';
  rss: number;
  heapUsed: number;
  heapTotal: number;
  external: number;
  arrayBuffers: number;
}

/** One DeltaDiscoveryResponse as it came off the stream: its encoded size and content. */
export interface ResponseSize {
  typeUrl: string;
  /** Bytes of the encoded DeltaDiscoveryResponse (the gRPC message, without its 5-byte prefix). */
  bytes: number;
  resources: number;
  removed: number;
}

/** What an agent tells the parent. Times are `nowMs()`, comparable across processes. */
export type AgentReport =
  | {
      type: 'ready';
      node: string;
      /** When the agent's module started running. */
      bootMs: number;
      /** When XdsClient.start() was called. */
      startMs: number;
      /** When the last type's initial response was applied. */
      readyMs: number;
      /** The responses that made up the initial sync. */
      sync: ResponseSize[];
      /** rchar of /proc/self/io over the sync: TLS bytes read from the socket (plus the ~50 B token file). */
      syncReadBytes: number;
      /** After a GC, before XdsClient.start(): Node, the modules and the parsed .proto files. */
      heapBeforeStart: number;
      rssBeforeStart: number;
      heapAfterSync: number;
      rss: number;
    }
  | { type: 'applied'; key: string; seq: number; atMs: number; response: ResponseSize }
  | MemoryReport
  | { type: 'error'; message: string };

export type AgentCommand = { type: 'mem' } | { type: 'stop' };

/** CLOCK_MONOTONIC in ms: the same clock in every process of the machine. */
export const nowMs = (): number => Number(process.hrtime.bigint()) / 1e6;

/** Bytes a process has read with read(2)-like calls (/proc/<pid>/io rchar); NaN if unreadable. */
export function readChars(pid: number | 'self' = 'self'): number {
  try {
    const m = /^rchar:\s*(\d+)/m.exec(readFileSync(`/proc/${pid}/io`, 'utf8'));
    return m ? Number(m[1]) : NaN;
  } catch {
    return NaN;
  }
}

/** The revision a probe policy carries, if it is one. */
export function probeSeq(p: Authorization): number | undefined {
  for (const r of p.rules)
    for (const c of r.clauses)
      for (const m of c.matches)
        for (const s of m.principals) {
          const hit = 'exact' in s ? PROBE_PRINCIPAL_RE.exec(s.exact) : null;
          if (hit) return Number(hit[1]);
        }
  return undefined;
}

/** Memory after a full GC (the process runs with --expose-gc). */
export function memoryReport(): MemoryReport {
  (globalThis as { gc?: () => void }).gc?.();
  const m = process.memoryUsage();
  return { type: 'mem', rss: m.rss, heapUsed: m.heapUsed, heapTotal: m.heapTotal, external: m.external, arrayBuffers: m.arrayBuffers };
}

async function main(): Promise<void> {
  const bootMs = nowMs();
  const send = (r: AgentReport): void => void process.send?.(r);
  if (!process.send) throw new Error('xds-agent is started by bench/controlplane.js with an IPC channel; it does not run alone');
  const { values } = parseArgs({
    options: { address: { type: 'string' }, 'root-cert': { type: 'string' }, token: { type: 'string' }, node: { type: 'string' } },
  });
  const { address, token, node } = values;
  const rootCert = values['root-cert'];
  if (!address || !rootCert || !token || !node) throw new Error('usage: xds-agent --address <host:port> --root-cert <pem> --token <file> --node <name>');
  // The parent is gone (or stopped us): never outlive it.
  process.on('disconnect', () => process.exit(0));

  // Load the .proto files now, so that these file reads are not counted as network bytes.
  protoRoot();
  for (const c of [codecs.deltaRequest, codecs.deltaResponse, codecs.address, codecs.authorization]) void c.type;

  // Count each response's encoded size by wrapping the deserializer XdsClient hands to
  // grpc-js: it receives exactly the bytes of one DeltaDiscoveryResponse. Responses are applied
  // in order, so `pending[0]` is the one being applied when ProxyState emits `change`.
  const pending: ResponseSize[] = [];
  const sync: ResponseSize[] = [];
  const method = adsService.DeltaAggregatedResources;
  const deserialize = method.responseDeserialize;
  method.responseDeserialize = (b: Buffer): PbDeltaResponse => {
    const res = deserialize(b);
    pending.push({ typeUrl: res.typeUrl, bytes: b.length, resources: res.resources.length, removed: res.removedResources.length });
    return res;
  };

  const state = new ProxyState();
  const xds = new XdsClient({ address, rootCertPem: readFileSync(rootCert), token: readTokenFile(token), nodeName: node, state, logger: log });
  let synced = false;
  let readyMs = NaN;
  state.on('change', (ch) => {
    const atMs = nowMs();
    for (const key of ch.policies.upserted) {
      const seq = probeSeq(state.policy(key)!);
      if (seq !== undefined && synced) send({ type: 'applied', key, seq, atMs, response: pending[0]! });
    }
  });
  // `applied` follows each response; `ready` follows the `applied` of the last initial one.
  xds.on('applied', () => {
    const r = pending.shift();
    if (r && !synced) sync.push(r);
  });
  xds.once('ready', () => {
    readyMs = nowMs();
    synced = true;
  });
  process.on('message', (c: AgentCommand) => {
    if (c.type === 'mem') send(memoryReport());
    else if (c.type === 'stop') void xds.stop().then(() => process.exit(0));
  });

  const before = memoryReport();
  const read0 = readChars();
  const startMs = nowMs();
  xds.start();
  await xds.ready;
  const syncReadBytes = readChars() - read0;
  const mem = memoryReport();
  send({ type: 'ready', node, bootMs, startMs, readyMs, sync, syncReadBytes, heapBeforeStart: before.heapUsed, rssBeforeStart: before.rss, heapAfterSync: mem.heapUsed, rss: mem.rss });
}

// Only as a process of its own: bench/controlplane.ts imports the helpers above.
const entry = process.argv[1] ? realpathSync(process.argv[1]) : '';
if (entry === realpathSync(fileURLToPath(import.meta.url))) {
  main().catch((e: unknown) => {
    const message = (e as Error).stack ?? String(e);
    process.stderr.write(`xds-agent failed: ${message}\n`);
    if (process.send) process.send({ type: 'error', message } satisfies AgentReport, () => process.exit(1));
    else process.exit(1);
  });
}
