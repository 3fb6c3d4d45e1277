// Subscriptions to the kernel events: the first subscriber starts the ring poller and turns
// emission on (nm_events_cfg), the last one turns it off and stops the poller; each batch is
// decoded once and handed to every subscriber, whose errors stay its own.
import { log } from '../log.js';
import { decodeEvents, decodeEventsCfg, decodeLost, encodeEventsCfg, EVENT_SIZE } from './event-layout.js';
import type { KernelEventBatch } from './events.js';
import type { MapFds } from './loader.js';
import { nativeFailure, type NativeBinding, type NativeRingEvents, type NativeRingStats } from './native.js';
import { BPF_ANY, u32 } from './layout.js';
import { pidAlive } from '../pids.js';

const rlog = log.child({ component: 'kernel-events' });

/**
 * Batching of the poller: at most 256 events, or what arrived within 50 ms of a batch's first
 * event. 64 batches may wait for the JS thread (16384 events); beyond that the poller drops.
 */
export const EVENT_BATCH = { maxEvents: 256, maxDelayMs: 50, maxQueuedBatches: 64 } as const;

export type KernelEventListener = (batch: KernelEventBatch) => void;

/** The poller's counters, what its start discarded, and records of kinds this build does not know. */
export type KernelEventStats = NativeRingStats & { discarded: bigint; unknownKinds: bigint };

/** Whether a process with this pid exists (EPERM: it does, it is just not ours to signal). */

export class KernelEventStream {
  readonly #binding: NativeBinding;
  readonly #maps: MapFds;
  readonly #subs = new Set<{ cb: KernelEventListener }>();
  #ring: NativeRingEvents | null = null;
  /** In-process drops of the rings this stream closed already. */
  #droppedBefore = 0n;
  #unknownKinds = 0n;

  constructor(binding: NativeBinding, maps: MapFds) {
    this.#binding = binding;
    this.#maps = maps;
    this.#clearStaleOwner();
  }

  /** See Redirector.onKernelEvents. */
  subscribe(cb: KernelEventListener): () => void {
    if (typeof cb !== 'function') throw new TypeError('the kernel event listener must be a function');
    const entry = { cb };
    this.#subs.add(entry);
    if (this.#subs.size === 1) {
      try {
        this.#start();
      } catch (err) {
        this.#subs.delete(entry);
        throw err;
      }
    }
    let done = false;
    return () => {
      if (done) return;
      done = true;
      this.#subs.delete(entry);
      if (this.#subs.size === 0) this.#stop();
    };
  }

  get subscribed(): boolean {
    return this.#subs.size > 0;
  }

  /** Events the ring had no room for (nm_events_lost) plus batches this process dropped. */
  lost(): bigint {
    return this.#kernelLost() + this.#droppedBefore + (this.#ring?.stats().dropped ?? 0n);
  }

  /** The current poller's counters; null when nobody is subscribed. */
  stats(): KernelEventStats | null {
    return this.#ring ? { ...this.#ring.stats(), discarded: this.#ring.discarded, unknownKinds: this.#unknownKinds } : null;
  }

  /** Test-only: a poller that stops consuming, so the ring fills. */
  setPaused(paused: boolean): void {
    if (!this.#ring) throw new RangeError('no kernel event subscription to pause');
    this.#ring.setPaused(paused);
  }

  /** Drops every subscription (Redirector.close). */
  close(): void {
    this.#subs.clear();
    this.#stop();
  }

  #kernelLost(): bigint {
    try {
      const raw = this.#binding.mapLookup(this.#maps.eventsLost, u32(0));
      return raw ? decodeLost(raw) : 0n;
    } catch (err) {
      throw nativeFailure('NM_ERR_NATIVE', 'reading nm_events_lost', err);
    }
  }

  #start(): void {
    const b = this.#binding;
    let ring: NativeRingEvents;
    try {
      ring = new b.RingEvents(this.#maps.events, EVENT_SIZE, EVENT_BATCH.maxEvents, EVENT_BATCH.maxDelayMs, EVENT_BATCH.maxQueuedBatches, (records, count) => {
        // A batch still queued when its ring was closed has nobody left to go to.
        if (this.#ring === ring) this.#deliver(records, count);
      });
    } catch (err) {
      throw nativeFailure('NM_ERR_NATIVE', 'starting the kernel event poller on nm_events', err);
    }
    this.#ring = ring;
    try {
      const prev = this.#readCfg();
      if (prev.enabled && prev.ownerPid !== process.pid && pidAlive(prev.ownerPid)) {
        // One ring, one reader: during an upgrade's overlap both agents read it (each sees a
        // share of the events) until the old one exits; it then leaves events on for us.
        rlog.warn({ ownerPid: prev.ownerPid }, 'taking over kernel events from another live process');
      }
      b.mapUpdate(this.#maps.eventsCfg, u32(0), encodeEventsCfg(true, process.pid), BPF_ANY);
    } catch (err) {
      this.#ring = null;
      ring.close();
      throw nativeFailure('NM_ERR_NATIVE', 'turning kernel events on (nm_events_cfg)', err);
    }
    rlog.info({ discarded: ring.discarded }, 'kernel events on');
  }

  #stop(): void {
    const ring = this.#ring;
    if (!ring) return;
    this.#ring = null;
    try {
      // Only our own flag: a newer agent that took the events over keeps them.
      if (this.#readCfg().ownerPid === process.pid) this.#binding.mapUpdate(this.#maps.eventsCfg, u32(0), encodeEventsCfg(false, 0), BPF_ANY);
    } catch (err) {
      rlog.warn({ err }, 'could not turn kernel events off; the programs keep writing to a ring nobody reads');
    }
    this.#droppedBefore += ring.stats().dropped;
    ring.close();
    rlog.info('kernel events off');
  }

  #readCfg(): { enabled: boolean; ownerPid: number } {
    const raw = this.#binding.mapLookup(this.#maps.eventsCfg, u32(0));
    return raw ? decodeEventsCfg(raw) : { enabled: false, ownerPid: 0 };
  }

  /** An agent that died with events on left them on: turn them off, nobody reads the ring. */
  #clearStaleOwner(): void {
    try {
      const cfg = this.#readCfg();
      if (cfg.enabled && cfg.ownerPid !== process.pid && !pidAlive(cfg.ownerPid)) {
        this.#binding.mapUpdate(this.#maps.eventsCfg, u32(0), encodeEventsCfg(false, 0), BPF_ANY);
        rlog.info({ ownerPid: cfg.ownerPid }, 'turned off the kernel events a process that is gone had left on');
      }
    } catch (err) {
      rlog.warn({ err }, 'could not check nm_events_cfg for a stale owner');
    }
  }

  #deliver(records: Buffer, count: number): void {
    let batch: KernelEventBatch;
    try {
      const { events, unknown } = decodeEvents(records, count);
      this.#unknownKinds += BigInt(unknown);
      batch = { events, lostTotal: this.lost() };
    } catch (err) {
      rlog.warn({ err, count }, 'a kernel event batch could not be decoded; dropped');
      return;
    }
    for (const s of [...this.#subs]) {
      try {
        s.cb(batch);
      } catch (err) {
        rlog.warn({ err }, 'a kernel event listener threw; the others still get the batch');
      }
    }
  }
}
