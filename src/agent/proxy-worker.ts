// A proxy worker thread (docs/architecture.md "Proxy workers"): a whole NodeProxy of its own,
// with its own listening sockets in every pod's SO_REUSEPORT groups, so the kernel spreads the
// pods' connections over the main thread's proxy and the workers. What it decides on is a
// mirror of the main thread's state (state-mirror.ts), sent on every change; certificates are
// asked of the main thread; its metrics are read at each scrape and its flow records forwarded,
// so /metrics, /debug/flows and capture see the node as one proxy.
import { parentPort, workerData } from 'node:worker_threads';
import { createLogger } from '../log.js';
import { NetnsConnector, NodeProxy, type HboneCredentials, type PlaintextSink, type PlaintextTap, type WorkloadCredentials } from '../proxy/index.js';
import { listenInNetns, socketsInNetns, workerKernel } from '../redirect/index.js';
import { FlowLog, MeshMetrics, type FlowRecord } from '../telemetry/index.js';
import { MeshView } from './mesh-view.js';
import { requestTelemetry } from './request-telemetry.js';
import { applyOps } from './state-mirror.js';
import type { FromWorker, ToWorker, WorkerCall, WorkerInit, WorkerStatus } from './worker-protocol.js';
import { LocalWorkloads } from './workloads.js';

/** How long a certificate the main thread gave is used before it is asked again (rotation). */
const CREDS_TTL_MS = 30_000;

function run(init: WorkerInit): void {
  const port = parentPort!;
  const send = (m: FromWorker, transfer?: ArrayBuffer[]): void => port.postMessage(m, transfer ?? []);
  const log = createLogger(2, init.logLevel).child({ worker: init.index });
  const metrics = new MeshMetrics({ defaultMetrics: false });
  const flows = new FlowLog(log);
  flows.shareIds(init.flowIds, init.index);

  // ---- state: a mirror of the main thread's ----
  const view = init.mode === 'control-plane' ? new MeshView(init.lb, log.child({ component: 'mesh' }), init.lbCursors) : undefined;
  const local = new LocalWorkloads(init.trustDomain);

  // ---- certificates, from the main thread's SecretManager ----
  let nextId = 1;
  const pendingCreds = new Map<number, { resolve(c: HboneCredentials): void; reject(e: Error): void }>();
  const creds = new Map<string, { at: number; p: Promise<HboneCredentials> }>();
  const credentials: WorkloadCredentials = {
    get(identity) {
      const c = creds.get(identity);
      if (c && performance.now() - c.at < CREDS_TTL_MS) return c.p;
      const id = nextId++;
      const p = new Promise<HboneCredentials>((resolve, reject) => pendingCreds.set(id, { resolve, reject }));
      creds.set(identity, { at: performance.now(), p });
      p.catch(() => creds.delete(identity));
      send({ t: 'creds', id, identity });
      return p;
    },
  };

  // ---- capture: while a capture runs on the main thread, taps and request records go there ----
  let capturing = false;
  let nextTap = 1;
  const taps = new Map<number, boolean>();
  const tap = {
    open(c: Parameters<PlaintextTap['open']>[0]): PlaintextSink | undefined {
      if (!capturing) return undefined;
      const cid = nextTap++;
      taps.set(cid, true);
      send({ t: 'tap', cid, open: c });
      const live = (): boolean => taps.get(cid) === true;
      return {
        data: (dir, chunk) => {
          if (live()) send({ t: 'tapData', cid, dir, chunk: new Uint8Array(chunk) });
        },
        end: (dir) => {
          if (live()) send({ t: 'tapEnd', cid, dir });
        },
        close: () => {
          if (taps.delete(cid)) send({ t: 'tapClose', cid });
        },
      };
    },
  };
  // Request records go to the main thread's recorder, which keeps them for `capture --since`
  // as it keeps its own, in batches with the flow records.
  let reqBatch: { view: unknown; facts: unknown; both: boolean }[] = [];
  const recorder = { request: (view: unknown, facts: unknown, both: boolean) => void reqBatch.push({ view, facts, both }) };
  const requests = requestTelemetry(metrics, init.accessLog, init.capture ? () => recorder : undefined);

  // ---- the proxy ----
  const kernel = workerKernel(init.maps);
  const proxy = new NodeProxy({
    listen: (ns, opts) => listenInNetns(ns, opts),
    upstream: new NetnsConnector((ns, n, o) => socketsInNetns(ns, n, o)),
    originalDst: kernel.originalDst,
    workloads: view ?? local,
    ...(view ? { authorize: (i) => view.authorize(i), router: view, http: { ...view.httpOptions(), telemetry: requests } } : {}),
    ...(view ? { hbone: { credentials, trustDomain: init.trustDomain } } : {}),
    telemetry: { metrics, flows, log },
    ...(init.connectTimeoutMs ? { connectTimeoutMs: init.connectTimeoutMs } : {}),
    ...(init.idleTimeoutMs !== undefined ? { idleTimeoutMs: init.idleTimeoutMs } : {}),
    tap,
    ...(kernel.splice ? { splice: kernel.splice } : {}),
  });

  // A bug that escapes the connection boundary ends this worker, never the agent: its
  // connections are reset (not closed with a FIN that would look like a clean end), and the
  // main thread starts another worker in its place.
  process.on('uncaughtException', (err) => {
    log.fatal({ err }, 'proxy worker: uncaught error; resetting its connections and exiting (the main thread starts another)');
    setTimeout(() => process.exit(1), 1000).unref();
    void proxy.close('closed: its proxy worker failed').finally(() => process.exit(1));
  });

  // ---- flow records, forwarded in batches ----
  let batch: FlowRecord[] = [];
  const flushFlows = (): void => {
    if (batch.length) send({ t: 'flows', records: batch });
    if (reqBatch.length) send({ t: 'requests', records: reqBatch });
    batch = [];
    reqBatch = [];
  };
  flows.onFinish((r) => {
    batch.push(r);
    if (batch.length >= 256) flushFlows();
  });
  const status = (): WorkerStatus => ({ open: proxy.openConnections(), listeners: proxy.listeners(), hbone: proxy.hboneSessions(), openFlows: flows.open().slice(0, 256) });
  const tick = setInterval(() => {
    flushFlows();
    send({ t: 'status', status: status() });
  }, 1000);
  const flowTick = setInterval(flushFlows, 100);

  let endDrain = new AbortController();
  const call = async (c: WorkerCall): Promise<unknown> => {
    switch (c.fn) {
      case 'addPod': return proxy.addPod(c.pod);
      case 'removePod': return proxy.removePod(c.uid, c.why);
      case 'reevaluate': return proxy.reevaluate();
      case 'stopAccepting': return proxy.stopAccepting();
      case 'drain': {
        const left = await proxy.drain(c.ms, endDrain.signal);
        endDrain = new AbortController();
        return left;
      }
      case 'close':
        await proxy.close(c.why);
        flushFlows();
        clearInterval(tick);
        clearInterval(flowTick);
        await requests.close();
        return undefined;
      case 'metrics':
        flushFlows();
        return metrics.registry.getMetricsAsJSON();
      case 'openFlows':
        flushFlows();
        return flows.open();
    }
  };

  port.on('message', (m: ToWorker) => {
    switch (m.t) {
      case 'call':
        call(m.call).then(
          (value) => {
            // Status first: the main thread's view of open connections is current when the answer lands.
            send({ t: 'status', status: status() });
            send({ t: 'reply', id: m.id, value });
          },
          (err: unknown) => send({ t: 'reply', id: m.id, error: { message: err instanceof Error ? err.message : String(err), ...((err as { code?: string }).code ? { code: (err as { code: string }).code } : {}) } }),
        );
        return;
      case 'state':
        if (view) {
          applyOps(view.state, m.ops);
          view.serving = m.serving;
        }
        return;
      case 'local':
        for (const p of local.all()) if (!m.pods.some((q) => q.uid === p.uid)) local.deleteUid(p.uid);
        for (const p of m.pods) local.set(p);
        return;
      case 'creds': {
        const p = pendingCreds.get(m.id);
        pendingCreds.delete(m.id);
        if (m.creds) p?.resolve(m.creds);
        else p?.reject(new Error(m.error ?? 'no certificate'));
        return;
      }
      case 'capture':
        capturing = m.active;
        if (!m.active) taps.clear();
        return;
      case 'untap':
        taps.set(m.cid, false);
        return;
      case 'endDrain':
        endDrain.abort();
        return;
    }
  });
  send({ t: 'ready' });
}

run(workerData as WorkerInit);
