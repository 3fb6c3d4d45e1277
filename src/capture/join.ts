// Joins kernel events (connects, sk_lookup verdicts, closes) with the proxy's flow records into
// capture records: outbound by socket cookie, else by (netns cookie, client port); inbound by
// the SYN's 4-tuple. Kernel-only flows (passed, dropped, observed) become records of their own.
// Everything pending is bounded: a TTL and a cap, and every eviction is counted.
import type { KernelEvent, KernelEventBatch } from '../redirect/index.js';

/** The kernel events this join reads: the redirect programs' (src/redirect/events.ts). */
export type JoinKernelEvent = KernelEvent;
export type JoinKernelBatch = KernelEventBatch;

/** Where kernel events come from (the Redirector's ring buffer, or a test). */
export interface KernelEventSource {
  subscribe(cb: (b: JoinKernelBatch) => void): () => void;
  /** Events the full ring dropped so far. */
  lost(): bigint;
}

/** What the join needs to know about the node's pods. */
export interface PodResolver {
  /** `ns/name` and SPIFFE ID of the pod with this IP. */
  byIp(ip: string): { pod: string; identity?: string } | undefined;
  /** `ns/name` of the pod whose netns has this cookie. */
  byNetns(cookie: bigint): string | undefined;
  /** The netns cookie of an enrolled pod (`ns/name`). */
  netnsOf(pod: string): bigint | undefined;
  /** The IP of an enrolled pod (`ns/name`): a connect made before bind() has no source yet. */
  ipOf?(pod: string): string | undefined;
}

/** A proxy-side connection as the join sees it (a capture record from the proxy, plus keys). */
export interface ProxySide {
  direction: 'outbound' | 'inbound' | 'local';
  /** `ns/name` of the pod whose listener accepted it. */
  pod: string;
  src: { ip: string; port: number };
  dst: { ip: string; port: number };
  hboneClient?: { ip: string; port: number };
  socketCookie?: bigint;
}

/** What kernel knowledge a proxy record gets. */
export interface KernelFacts {
  socketCookie?: string;
  netnsCookie?: string;
  events: string[];
}

/** A kernel-only flow, ready to become a record. */
export interface KernelFlow {
  verdict: 'passed' | 'dropped' | 'observed';
  reason?: string;
  src: { ip: string; port: number };
  dst: { ip: string; port: number };
  netnsPod?: string;
  startNs: bigint;
  durationMs?: number;
  bytes?: { sent: number; received: number };
  facts: KernelFacts;
}

interface Pending {
  kind: 'redirected' | 'passed' | 'steered' | 'reported';
  at: number;
  events: JoinKernelEvent[];
  first?: JoinKernelEvent;
  close?: JoinKernelEvent;
  /** Redirected and closed with no proxy record yet: reported as observed after this. */
  graceUntil?: number;
  keys: string[];
}

export interface JoinOptions {
  onKernelFlow(f: KernelFlow): void;
  pods: PodResolver;
  /** How long a pending entry waits (default 120 s). */
  ttlMs?: number;
  /** Most pending entries (default 16384); the oldest is evicted beyond it. */
  cap?: number;
  /** How long a closed, redirected connection waits for the proxy's record (default 2 s). */
  graceMs?: number;
  now?: () => number;
}

export interface JoinStats {
  pending: number;
  evicted: { cap: number; ttl: number };
  unmatchedCloses: number;
  kernelLost: bigint;
}

const key = {
  cookie: (c: bigint) => `c|${c}`,
  out: (netns: bigint, port: number) => `o|${netns}|${port}`,
  inb: (src: { ip: string; port: number }, dst: { ip: string; port: number }) => `i|${src.ip}:${src.port}|${dst.ip}:${dst.port}`,
};

function facts(p: Pending): KernelFacts {
  const e = p.first ?? p.close;
  return {
    ...(e && e.socketCookie !== 0n ? { socketCookie: String(e.socketCookie) } : {}),
    ...(e ? { netnsCookie: String(e.netnsCookie) } : {}),
    events: p.events.map((x) => x.kind),
  };
}

export class FlowJoin {
  readonly #o: Required<Omit<JoinOptions, 'onKernelFlow' | 'pods'>> & Pick<JoinOptions, 'onKernelFlow' | 'pods'>;
  /** Insertion order is age order: eviction takes from the front. */
  readonly #entries = new Set<Pending>();
  readonly #index = new Map<string, Pending>();
  readonly #stats = { evicted: { cap: 0, ttl: 0 }, unmatchedCloses: 0 };
  #lost = 0n;

  constructor(o: JoinOptions) {
    this.#o = { ttlMs: 120_000, cap: 16_384, graceMs: 2000, now: () => Date.now(), ...o };
  }

  stats(): JoinStats {
    return { pending: this.#entries.size, evicted: { ...this.#stats.evicted }, unmatchedCloses: this.#stats.unmatchedCloses, kernelLost: this.#lost };
  }

  #add(p: Pending): void {
    while (this.#entries.size >= this.#o.cap) {
      const oldest = this.#entries.values().next().value!;
      this.#stats.evicted.cap++;
      this.#expire(oldest);
    }
    this.#entries.add(p);
    for (const k of p.keys) this.#index.set(k, p);
  }

  #remove(p: Pending): void {
    this.#entries.delete(p);
    for (const k of p.keys) if (this.#index.get(k) === p) this.#index.delete(k);
  }

  #index2(p: Pending, k: string): void {
    if (!p.keys.includes(k)) p.keys.push(k);
    this.#index.set(k, p);
  }

  /** An entry leaves by age or by the cap: a kernel-only flow is still reported, without its close. */
  #expire(p: Pending): void {
    this.#remove(p);
    if (p.kind === 'passed' || (p.kind === 'redirected' && p.close)) this.#kernelFlow(p);
  }

  #kernelFlow(p: Pending): void {
    const first = p.first ?? p.close!;
    const c = p.close;
    let verdict: KernelFlow['verdict'] = first.enrolled ? 'passed' : 'observed';
    let reason: string | undefined = first.reason ?? (first.enrolled ? undefined : 'not_enrolled');
    if (first.kind === 'lookup_dropped' || first.refused) {
      verdict = 'dropped';
      reason = first.reason ?? 'no_listener';
    } else if (p.kind === 'redirected') {
      // Captured, but no proxy record followed: the agent never accepted it (not serving the pod).
      verdict = 'observed';
      reason = 'redirected, no proxy record';
    }
    this.#o.onKernelFlow({
      verdict,
      ...(reason ? { reason } : {}),
      // The close knows the bound source port; a connect may run before the socket has one.
      src: c && first.src.port === 0 ? c.src : first.src,
      dst: first.dst,
      ...(this.#o.pods.byNetns(first.netnsCookie) ? { netnsPod: this.#o.pods.byNetns(first.netnsCookie)! } : {}),
      startNs: first.monotonicNs,
      ...(c && p.first ? { durationMs: Number((c.monotonicNs - p.first.monotonicNs) / 1_000_000n) } : {}),
      ...(c ? { bytes: { sent: Number(c.bytesSent ?? 0n), received: Number(c.bytesReceived ?? 0n) } } : {}),
      facts: facts(p),
    });
  }

  /** Takes a batch of kernel events, in order. */
  kernel(b: JoinKernelBatch): void {
    if (b.lostTotal > this.#lost) this.#lost = b.lostTotal;
    const now = this.#o.now();
    for (const e of b.events) this.#event(e, now);
  }

  #event(e: JoinKernelEvent, now: number): void {
    switch (e.kind) {
      case 'connect_redirected':
      case 'connect_passed': {
        if (e.kind === 'connect_passed' && (e.enrolled || e.refused)) {
          // No close follows: the programs track closes only of captured and observed sockets.
          this.#kernelFlow({ kind: 'passed', at: now, events: [e], first: e, keys: [] });
          return;
        }
        const p: Pending = { kind: e.kind === 'connect_redirected' ? 'redirected' : 'passed', at: now, events: [e], first: e, keys: [] };
        this.#add(p);
        if (e.socketCookie !== 0n) this.#index2(p, key.cookie(e.socketCookie));
        if (e.src.port !== 0) this.#index2(p, key.out(e.netnsCookie, e.src.port));
        return;
      }
      case 'lookup_steered': {
        const p: Pending = { kind: 'steered', at: now, events: [e], first: e, keys: [] };
        this.#add(p);
        this.#index2(p, key.inb(e.src, e.dst));
        return;
      }
      case 'lookup_passed':
      case 'lookup_dropped':
        // The agent delivering a connection it accepted: part of that proxied connection's record.
        if (e.reason === 'delivery') return;
        // Nothing follows a lookup the programs did not steer: reported at once.
        this.#kernelFlow({ kind: 'passed', at: now, events: [e], first: e, keys: [] });
        return;
      case 'close':
        this.#close(e, now);
    }
  }

  #close(e: JoinKernelEvent, now: number): void {
    const byCookie = e.socketCookie !== 0n ? this.#index.get(key.cookie(e.socketCookie)) : undefined;
    const byPort = this.#index.get(key.out(e.netnsCookie, e.src.port));
    if (byPort?.kind === 'reported' && byCookie?.kind !== 'passed') {
      // The proxy reported this connection before the app's socket closed: nothing to add.
      this.#remove(byPort);
      if (byCookie) this.#remove(byCookie);
      return;
    }
    const p = byCookie ?? byPort;
    if (!p) {
      this.#stats.unmatchedCloses++;
      return;
    }
    p.events.push(e);
    p.close = e;
    if (p.kind === 'passed' && !p.first?.enrolled) {
      // A pod outside the mesh calling an enrolled one: the destination's sk_lookup steered the
      // SYN to the agent, and the proxy's inbound record is this connection, seen from the
      // other end. One record: the observed events join it (whichever of the two came first).
      const inb = this.#index.get(key.inb(e.src, e.dst));
      if (inb?.kind === 'steered' || inb?.kind === 'reported') {
        this.#remove(p);
        if (inb.kind === 'steered') inb.events.push(...p.events);
        else this.#remove(inb);
        return;
      }
    }
    if (p.kind === 'passed') {
      this.#remove(p);
      this.#kernelFlow(p);
    } else if (p.kind === 'reported') {
      // The proxy reported this connection already; its close adds nothing.
      this.#remove(p);
    } else if (p.kind === 'redirected') {
      this.#index2(p, key.out(e.netnsCookie, e.src.port));
      p.graceUntil = now + this.#o.graceMs;
    }
  }

  /** Kernel facts for a proxy record (the entry is consumed); undefined when the kernel said nothing. */
  proxy(s: ProxySide): KernelFacts | undefined {
    if (s.direction === 'inbound' && s.hboneClient) {
      // One steered SYN carries a whole HBONE session (many streams): the entry stays.
      const p = this.#index.get(key.inb(s.hboneClient, { ip: s.dst.ip, port: 15008 }));
      return p ? facts(p) : undefined;
    }
    if (s.direction === 'inbound') {
      const p = this.#index.get(key.inb(s.src, s.dst));
      if (!p) return undefined;
      this.#remove(p);
      // A client outside the mesh (no netns the agent serves) may still report its observed
      // close: remember the record so that close joins it instead of making a second one.
      const client = this.#o.pods.byIp(s.src.ip)?.pod;
      const closed = p.events.some((x) => x.kind === 'close');
      if (!closed && (client === undefined || this.#o.pods.netnsOf(client) === undefined)) {
        const t: Pending = { kind: 'reported', at: this.#o.now(), events: [], keys: [] };
        this.#add(t);
        this.#index2(t, key.inb(s.src, s.dst));
      }
      return facts(p);
    }
    const netns = this.#o.pods.netnsOf(s.pod);
    const p = (s.socketCookie !== undefined ? this.#index.get(key.cookie(s.socketCookie)) : undefined) ?? (netns !== undefined ? this.#index.get(key.out(netns, s.src.port)) : undefined);
    if (p && p.kind === 'redirected') {
      this.#remove(p);
      if (!p.close) this.#tombstone(p, netns, s.src.port);
      return facts(p);
    }
    if (netns !== undefined) this.#tombstone(undefined, netns, s.src.port);
    return undefined;
  }

  /** Remembers a reported connection so its later kernel close is absorbed, not unmatched. */
  #tombstone(p: Pending | undefined, netns: bigint | undefined, port: number): void {
    const t: Pending = { kind: 'reported', at: this.#o.now(), events: [], keys: [] };
    this.#add(t);
    if (p?.first && p.first.socketCookie !== 0n) this.#index2(t, key.cookie(p.first.socketCookie));
    if (netns !== undefined) this.#index2(t, key.out(netns, port));
  }

  /** Evicts what is older than the TTL and reports redirected closes the proxy never did. */
  sweep(): void {
    const now = this.#o.now();
    for (const p of this.#entries) {
      if (p.graceUntil !== undefined && now >= p.graceUntil) {
        this.#remove(p);
        this.#kernelFlow(p);
      } else if (now - p.at >= this.#o.ttlMs) {
        if (p.kind !== 'reported') this.#stats.evicted.ttl++;
        this.#expire(p);
      }
    }
  }
}
