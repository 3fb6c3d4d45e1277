// Turns what the node sees into capture records for the hub: the proxy's finished flow records
// (the two halves of a same-node hand-off become one record), joined with kernel facts, and
// the kernel-only flows the join reports.
import type { FlowRecord } from '../telemetry/index.js';
import type { CaptureHub } from './hub.js';
import { FlowJoin, type JoinOptions, type KernelEventSource, type KernelFlow, type PodResolver } from './join.js';
import { fromFlow, fromRequest, type CaptureRecord, type RequestFacts, type RequestSide } from './record.js';

/** The in-process hand-off's outbound half names its upstream this way (proxy/outbound.ts). */
const SAME_NODE = '(same node, in process)';

/** Wall-clock ms of a CLOCK_MONOTONIC nanosecond timestamp (bpf_ktime_get_ns). */
export function monotonicToEpochMs(ns: bigint): number {
  const nowNs = process.hrtime.bigint();
  return Date.now() - Number((nowNs - ns) / 1_000_000n);
}

function split(addr: string): { ip: string; port: number } {
  const i = addr.lastIndexOf(':');
  return { ip: addr.slice(0, i), port: Number(addr.slice(i + 1)) };
}

export class CaptureRecorder {
  readonly join: FlowJoin;
  readonly #hub: CaptureHub;
  readonly #pods: PodResolver;
  /** Outbound halves of same-node hand-offs waiting (one microtask) for their inbound half. */
  readonly #local = new Map<string, FlowRecord>();
  #sweeper: NodeJS.Timeout | undefined;
  #unsubscribe: (() => void) | undefined;

  constructor(hub: CaptureHub, pods: PodResolver, o: Omit<JoinOptions, 'onKernelFlow' | 'pods'> = {}) {
    this.#hub = hub;
    this.#pods = pods;
    this.join = new FlowJoin({ ...o, pods, onKernelFlow: (k) => this.#kernelFlow(k) });
    this.#sweeper = setInterval(() => this.join.sweep(), 1000);
    this.#sweeper.unref();
  }

  /** Reads kernel events from now on. */
  attach(src: KernelEventSource): void {
    this.#unsubscribe?.();
    this.#unsubscribe = src.subscribe((b) => this.join.kernel(b));
  }

  /** Stops reading kernel events (the last capture ended). */
  detach(): void {
    this.#unsubscribe?.();
    this.#unsubscribe = undefined;
  }

  stop(): void {
    clearInterval(this.#sweeper);
    this.#sweeper = undefined;
    this.#unsubscribe?.();
  }

  /** A finished proxy flow record (FlowLog.onFinish). */
  flow(f: FlowRecord): void {
    const k = `${f.src.ip}:${f.src.port}`;
    if (f.direction === 'outbound' && f.upstream?.endsWith(SAME_NODE)) {
      // Its inbound half finishes right after it, in the same turn (ConnectionTracker #end).
      this.#local.set(k, f);
      queueMicrotask(() => {
        if (this.#local.get(k) !== f) return;
        this.#local.delete(k);
        this.#emit(f);
      });
      return;
    }
    const out = f.direction === 'inbound' ? this.#local.get(k) : undefined;
    if (out) {
      this.#local.delete(k);
      this.#emit(out, f);
      return;
    }
    this.#emit(f);
  }

  /**
   * One finished HTTP request, from the reporter that saw it (`local`: both halves in this
   * proxy). Built only when someone captures or a later `since` replay asks for it.
   */
  request(v: RequestSide, r: RequestFacts, local: boolean): void {
    this.#hub.publishLazy(() => fromRequest(v, r, local));
  }

  #emit(f: FlowRecord, inbound?: FlowRecord): void {
    // Kernel events are read only while a capture runs: with none attached there is nothing to
    // join, the join keeps no state for this connection, and the record is built only if a
    // `since` replay asks for it.
    if (this.#unsubscribe === undefined) {
      this.#hub.publishLazy(() => {
        const { v: _v, id: _id, node: _node, ...body } = fromFlow('', this.#hub.node, f, inbound);
        return body;
      });
      return;
    }
    const rec = fromFlow('', this.#hub.node, f, inbound);
    const facts = this.join.proxy({
      direction: rec.direction === 'inbound' ? 'inbound' : 'outbound',
      pod: f.pod,
      src: { ip: f.src.ip, port: f.src.port },
      dst: { ip: rec.dst.ip, port: rec.dst.port },
      ...(f.direction === 'inbound' && f.hbone ? { hboneClient: split(f.hbone.peer) } : {}),
    });
    // The destination half of a local hand-off was steered by nothing: only the outbound joins.
    const { v: _v, id: _id, node: _node, ...body } = rec;
    this.#hub.publish({ ...body, ...(facts ? { source: 'proxy+kernel', kernel: facts } : {}) });
  }

  #kernelFlow(k: KernelFlow): void {
    const src = this.#pods.byIp(k.src.ip);
    const dst = this.#pods.byIp(k.dst.ip);
    const srcPod = src?.pod ?? k.netnsPod;
    const rec: Omit<CaptureRecord, 'v' | 'id' | 'node'> = {
      time: new Date(monotonicToEpochMs(k.startNs)).toISOString(),
      ...(k.durationMs !== undefined ? { durationMs: k.durationMs } : {}),
      direction: 'kernel',
      source: 'kernel',
      protocol: 'tcp',
      // A connect made before bind() carries no source address: the pod's IP is still known.
      src: { ...k.src, ...(k.src.ip === '0.0.0.0' && srcPod && this.#pods.ipOf?.(srcPod) ? { ip: this.#pods.ipOf(srcPod)! } : {}), ...(srcPod ? { pod: srcPod } : {}) },
      dst: { ...k.dst, ...(dst ? { pod: dst.pod } : {}) },
      verdict: k.verdict,
      ...(k.reason ? { reason: k.reason } : {}),
      ...(k.bytes ? { bytes: { ...k.bytes, from: 'kernel' as const } } : {}),
      kernel: k.facts,
    };
    this.#hub.publish(rec);
  }
}
