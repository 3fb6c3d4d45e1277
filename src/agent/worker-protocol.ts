// The messages between the agent's main thread and its proxy workers (proxy-workers.ts hosts
// them, proxy-worker.ts is a worker). Everything here is structured-clone data.
import type { MetricObjectWithValues, MetricValue } from 'prom-client';
import type { HboneCredentials, HboneSessionInfo, LbPolicy, LocalPod } from '../proxy/index.js';
import type { WorkerMaps } from '../redirect/index.js';
import type { FlowRecord, AccessLogMode } from '../telemetry/index.js';
import type { KnownPod } from './workloads.js';
import type { StateOp } from './state-mirror.js';

/** workerData of a proxy worker. */
export interface WorkerInit {
  /** 1..N-1: the main thread's proxy is 0. */
  index: number;
  /** How many proxies run (main thread included). */
  count: number;
  /** Round-robin cursors shared by every proxy's balancer (newCursors). */
  lbCursors: Uint32Array;
  /** The node-wide flow id counter (FlowLog.shareIds). */
  flowIds: BigInt64Array;
  /** Capture is on in the agent: request records go to the main thread's recorder (its history). */
  capture: boolean;
  mode: 'local' | 'control-plane';
  trustDomain: string;
  lb: LbPolicy;
  maps: WorkerMaps;
  connectTimeoutMs?: number;
  idleTimeoutMs?: number;
  accessLog: AccessLogMode;
  logLevel: string;
}

/** What the main thread may call on a worker (answered by a Reply with the same id). */
export type WorkerCall =
  | { fn: 'addPod'; pod: LocalPod }
  | { fn: 'removePod'; uid: string; why?: string }
  | { fn: 'reevaluate' }
  | { fn: 'stopAccepting' }
  | { fn: 'drain'; ms: number }
  | { fn: 'close'; why?: string }
  | { fn: 'metrics' }
  | { fn: 'openFlows' };

export type Metrics = MetricObjectWithValues<MetricValue<string>>[];

/** What a worker reports every second (and before answering a drain or close). */
export interface WorkerStatus {
  open: number;
  listeners: { pod: string; netns: string; fds: Record<string, number>; ports: string[] }[];
  hbone: HboneSessionInfo[];
  /** At most 256 of its open connections' records, for /config_dump. */
  openFlows: FlowRecord[];
}

export type ToWorker =
  | { t: 'call'; id: number; call: WorkerCall }
  | { t: 'state'; ops: StateOp[]; serving: boolean }
  | { t: 'local'; pods: KnownPod[] }
  | { t: 'creds'; id: number; creds?: HboneCredentials; error?: string }
  | { t: 'capture'; active: boolean }
  | { t: 'untap'; cid: number }
  | { t: 'endDrain' };

export type FromWorker =
  | { t: 'ready' }
  | { t: 'reply'; id: number; value?: unknown; error?: { message: string; code?: string } }
  | { t: 'creds'; id: number; identity: string }
  | { t: 'flows'; records: FlowRecord[] }
  | { t: 'status'; status: WorkerStatus }
  | { t: 'tap'; cid: number; open: unknown }
  | { t: 'tapData'; cid: number; dir: 'c2s' | 's2c'; chunk: Uint8Array }
  | { t: 'tapEnd'; cid: number; dir: 'c2s' | 's2c' }
  | { t: 'tapClose'; cid: number }
  | { t: 'requests'; records: { view: unknown; facts: unknown; both: boolean }[] };
