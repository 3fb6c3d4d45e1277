// The subscription logic over the kernel event ring, with a fake binding (the real poller and
// programs are covered by test/privileged/kernel-events.test.ts): the first subscriber turns
// emission on, the last one off, only its own flag; a dead owner's flag is cleared; a
// listener's error stays its own; a batch of a closed ring reaches nobody.
import { describe, expect, it } from 'vitest';
import { decodeEventsCfg, encodeEvent, encodeEventsCfg } from '../../src/redirect/event-layout.js';
import { KernelEventStream } from '../../src/redirect/kernel-events.js';
import type { MapFds } from '../../src/redirect/loader.js';
import type { NativeBinding, NativeRingBatchCallback } from '../../src/redirect/native.js';
import type { KernelEventBatch } from '../../src/redirect/events.js';

const FDS: MapFds = { podCfg: 1, cookieDst: 2, origDst: 3, enrolled: 4, listeners: 5, podOwner: 6, podConns: 7, stats: 8, events: 9, eventsCfg: 10, eventsLost: 11, splice: 12, splicePeer: 13, spliceTaken: 14 };

function fake(cfg = encodeEventsCfg(false, 0), lost = 0n) {
  const lostBuf = Buffer.alloc(8);
  lostBuf.writeBigUInt64LE(lost);
  const maps = new Map<number, Buffer>([
    [FDS.eventsCfg, cfg],
    [FDS.eventsLost, lostBuf],
  ]);
  const rings: Array<{ cb: NativeRingBatchCallback; closed: boolean; dropped: bigint }> = [];
  class RingEvents {
    readonly discarded = 0n;
    #r: (typeof rings)[number];
    constructor(fd: number, size: number, _b: number, _d: number, _q: number, cb: NativeRingBatchCallback) {
      expect(fd).toBe(FDS.events);
      expect(size).toBe(80);
      this.#r = { cb, closed: false, dropped: 0n };
      rings.push(this.#r);
    }
    close() {
      this.#r.closed = true;
    }
    setPaused() {}
    stats() {
      return { delivered: 0n, dropped: this.#r.dropped, badRecords: 0n, pollErrors: 0n, open: !this.#r.closed };
    }
  }
  const binding = {
    mapLookup: (fd: number) => maps.get(fd) ?? null,
    mapUpdate: (fd: number, _k: Buffer, v: Buffer) => void maps.set(fd, Buffer.from(v)),
    RingEvents,
  } as unknown as NativeBinding;
  return { binding, rings, cfg: () => decodeEventsCfg(maps.get(FDS.eventsCfg)!), setLost: (n: bigint) => lostBuf.writeBigUInt64LE(n) };
}

const record = (port: number) => encodeEvent({ kind: 1, flags: 1, src: Buffer.from([0, 0, 0, 0]), dst: Buffer.from([10, 0, 0, 1]), srcPort: 0, dstPort: port });

describe('kernel event subscriptions', () => {
  it('turns emission on with the first subscriber and off with the last, and starts one poller', () => {
    const f = fake();
    const s = new KernelEventStream(f.binding, FDS);
    expect(f.cfg().enabled).toBe(false);
    const off1 = s.subscribe(() => {});
    const off2 = s.subscribe(() => {});
    expect(f.cfg()).toEqual({ enabled: true, ownerPid: process.pid });
    expect(f.rings).toHaveLength(1);
    off1();
    off1(); // idempotent
    expect(f.cfg().enabled).toBe(true);
    off2();
    expect(f.cfg().enabled).toBe(false);
    expect(f.rings[0]!.closed).toBe(true);
  });

  it('hands each batch to every listener, decoded, with the lost total; a throwing listener does not stop the others', () => {
    const f = fake();
    f.setLost(5n);
    const s = new KernelEventStream(f.binding, FDS);
    const got: KernelEventBatch[] = [];
    s.subscribe(() => {
      throw new Error('listener bug');
    });
    s.subscribe((b) => got.push(b));
    f.rings[0]!.dropped = 2n;
    f.rings[0]!.cb(Buffer.concat([record(80), record(443)]), 2, 2n);
    expect(got).toHaveLength(1);
    expect(got[0]!.events.map((e) => e.dst.port)).toEqual([80, 443]);
    expect(got[0]!.lostTotal).toBe(7n);
    expect(s.lost()).toBe(7n);
  });

  it('delivers nothing from a ring it closed, and keeps counting its drops after', () => {
    const f = fake();
    const s = new KernelEventStream(f.binding, FDS);
    const got: KernelEventBatch[] = [];
    const off = s.subscribe((b) => got.push(b));
    const first = f.rings[0]!;
    first.dropped = 3n;
    off();
    first.cb(record(80), 1, 3n);
    expect(got).toEqual([]);
    expect(s.lost()).toBe(3n);
    s.subscribe((b) => got.push(b));
    f.rings[1]!.cb(record(81), 1, 0n);
    expect(got.map((b) => b.events[0]!.dst.port)).toEqual([81]);
  });

  it('leaves the flag of a live process that took events over, and clears one a dead process left', () => {
    const f = fake();
    const s = new KernelEventStream(f.binding, FDS);
    const off = s.subscribe(() => {});
    // Another live agent (pid 1 always exists) took over: our last unsubscribe leaves it on.
    f.binding.mapUpdate(FDS.eventsCfg, Buffer.alloc(4), encodeEventsCfg(true, 1), 0);
    off();
    expect(f.cfg()).toEqual({ enabled: true, ownerPid: 1 });

    // A pid that cannot exist: its flag is stale, so opening clears it.
    const dead = fake(encodeEventsCfg(true, 0x3fffffff));
    new KernelEventStream(dead.binding, FDS);
    expect(dead.cfg().enabled).toBe(false);
    const live = fake(encodeEventsCfg(true, 1));
    new KernelEventStream(live.binding, FDS);
    expect(live.cfg()).toEqual({ enabled: true, ownerPid: 1 });
  });

  it('refuses a listener that is not a function, and subscribes nothing', () => {
    const f = fake();
    const s = new KernelEventStream(f.binding, FDS);
    expect(() => s.subscribe(42 as unknown as () => void)).toThrow(TypeError);
    expect(f.rings).toHaveLength(0);
    expect(s.subscribed).toBe(false);
  });
});
