// The same-node kernel splice, the proxy's half. Once a connection between two TCP sockets of
// this proxy is authorized, the kernel moves its bytes (bpf/lib/splice.h): the proxy stops
// reading, writes out what it had already read, pairs the sockets, and from then on only
// watches for the end of each direction, errors and the idle timeout. What relay() promises
// holds here too: bytes in order and none lost, half-close carried across after the last byte,
// a reset carried as a reset, keepalive, the idle timeout, and byte counts (from the kernel).
// Whenever splicing cannot be done for a connection, it is relayed in user space (relay.ts).
import type { Socket } from 'node:net';
import { DEFAULT_IDLE_TIMEOUT_MS, DEFAULT_KEEPALIVE_MS, MAX_TIMER_MS, joinFates, relay, type RelayOptions, type RelayProgress, type RelayResult } from './relay.js';
import type { SocketSplicer } from './types.js';

/** Node's private TCP handle: its fd, and the reading state Node itself keeps in step. */
interface TcpHandle {
  fd?: number;
  reading?: boolean;
  readStop?(): number;
  readStart?(): number;
}

function handleOf(sock: Socket): TcpHandle | undefined {
  return (sock as unknown as { _handle?: TcpHandle })._handle;
}

/** Node's private handle fd; present on Linux for TCP sockets, -1 otherwise. */
export function fdOf(sock: Socket): number {
  return handleOf(sock)?.fd ?? -1;
}

/** Stops reading from the kernel at once (pause() only stops once Node's buffer fills). */
function stopReading(sock: Socket): void {
  const h = handleOf(sock);
  if (h?.reading && h.readStop) {
    h.reading = false;
    h.readStop();
  }
}

/**
 * Starts reading from the kernel again, as Node's own tryReadStart does. resume() alone is not
 * enough: a stream stopped by stopReading() may still count a read in progress, and then never
 * asks for another.
 */
function startReading(sock: Socket): void {
  const h = handleOf(sock);
  if (h && !h.reading && h.readStart && !sock.destroyed) {
    h.reading = true;
    const err = h.readStart();
    if (err) sock.destroy(Object.assign(new Error(`read start failed (${err})`), { code: 'EREADSTART' }));
  }
}

/** The peer's FIN has been read (the 'end' event may still be ahead). */
function sawEof(sock: Socket): boolean {
  return (sock as unknown as { _readableState?: { ended?: boolean } })._readableState?.ended === true;
}

/** How long writing out what Node had read may take before the connection is relayed instead. */
export const SETTLE_TIMEOUT_MS = 1000;
/** Longest wait between two looks at whether a direction's last byte has left. */
const FLUSH_POLL_MAX_MS = 50;

export interface SpliceRelayOptions extends RelayOptions {
  /** Called when a connection could not be spliced and is relayed in user space instead. */
  onFallback?: (reason: string, err?: unknown) => void;
}

/** Outcome of a relay that may have been spliced. */
export type SpliceRelayResult = RelayResult & { spliced?: boolean };

type Settled = 'ready' | 'fallback' | 'broken';

/**
 * Writes out what Node has already read on each side, until neither holds anything and both
 * have stopped reading. 'fallback' when a side has seen its peer's FIN or it takes too long;
 * 'broken' when a side died meanwhile.
 */
async function settle(down: Socket, up: Socket): Promise<Settled> {
  const deadline = Date.now() + SETTLE_TIMEOUT_MS;
  for (;;) {
    if (down.destroyed || up.destroyed) return 'broken';
    // A buffered FIN is left to relay(): pipe() carries data and end in order.
    if (sawEof(down) || sawEof(up)) return 'fallback';
    stopReading(down);
    stopReading(up);
    const writes = [moveBuffered(down, up), moveBuffered(up, down)].filter((w): w is Promise<void> => w !== undefined);
    // read() may have started reading again (it asks for more below the high-water mark).
    stopReading(down);
    stopReading(up);
    if (writes.length === 0 && down.writableLength === 0 && up.writableLength === 0) return 'ready';
    const left = deadline - Date.now();
    if (left <= 0) return 'fallback';
    let timer: NodeJS.Timeout | undefined;
    const timedOut = await Promise.race([
      Promise.all(writes).then(() => false),
      new Promise<boolean>((r) => (timer = setTimeout(() => r(true), left))),
      new Promise<boolean>((r) => {
        down.once('close', () => r(false));
        up.once('close', () => r(false));
      }),
    ]);
    clearTimeout(timer);
    if (timedOut) return 'fallback';
  }
}

/** Writes what `from` has buffered to `to`; the promise of the last write, if any. */
function moveBuffered(from: Socket, to: Socket): Promise<void> | undefined {
  let last: Promise<void> | undefined;
  for (let c = from.read() as Buffer | null; c !== null; c = from.read() as Buffer | null) {
    const chunk = c;
    last = new Promise<void>((r) => to.write(chunk, () => r()));
  }
  return last;
}

/**
 * Relays two TCP sockets (both `allowHalfOpen`), spliced in the kernel when it can be: the same
 * contract as relay(). `progress` counts what the kernel received on each socket.
 */
export function spliceRelay(down: Socket, up: Socket, k: SocketSplicer, o: SpliceRelayOptions = {}): { done: Promise<SpliceRelayResult>; progress: RelayProgress } {
  let current: RelayProgress = { sent: () => down.bytesRead, received: () => up.bytesRead };
  const progress: RelayProgress = { sent: () => current.sent(), received: () => current.received() };
  const fallback = (reason: string, err?: unknown): Promise<RelayResult> => {
    o.onFallback?.(reason, err);
    const r = relay(down, up, o);
    current = r.progress;
    startReading(down);
    startReading(up);
    return r.done;
  };
  const done = (async (): Promise<SpliceRelayResult> => {
    // Errors while settling must not go unheard (an 'error' with no listener kills the agent).
    let first: { err: Error & { code?: string }; side: 'downstream' | 'upstream' } | undefined;
    const onDown = (err: Error): void => void (first ??= { err, side: 'downstream' });
    const onUp = (err: Error): void => void (first ??= { err, side: 'upstream' });
    down.on('error', onDown);
    up.on('error', onUp);
    const settled = await settle(down, up);
    down.off('error', onDown);
    up.off('error', onUp);
    if (settled === 'broken') return broken(down, up, first);
    if (settled === 'fallback') return fallback('a side ended or was slow to take buffered bytes before the splice');
    const fds = [fdOf(down), fdOf(up)] as const;
    if (fds[0] < 0 || fds[1] < 0) return fallback('a socket has no fd');
    let cookies: [bigint, bigint];
    try {
      cookies = k.pair(fds[0], fds[1]);
    } catch (err) {
      return fallback('the kernel refused the splice', err);
    }
    const s = spliced(down, up, k, fds, cookies, o);
    current = s.progress;
    return s.done;
  })();
  return { done, progress };
}

/** A side died while settling: reset the other, and report once both are closed. */
async function broken(down: Socket, up: Socket, first: { err: Error & { code?: string }; side: 'downstream' | 'upstream' } | undefined): Promise<RelayResult> {
  for (const s of [down, up]) {
    s.on('error', () => {});
    if (!s.destroyed) s.resetAndDestroy();
  }
  await Promise.all([down, up].map((s) => (s.closed ? undefined : new Promise((r) => s.once('close', r)))));
  const side = first?.side ?? (down.destroyed && !up.destroyed ? 'downstream' : 'upstream');
  const err = first?.err ?? Object.assign(new Error('closed while the splice was set up'), { code: 'ECONNRESET' });
  return { sent: down.bytesRead, received: up.bytesRead, error: err, failedSide: side };
}

/** The spliced phase: the kernel moves the bytes; the proxy watches ends, errors and idleness. */
function spliced(down: Socket, up: Socket, k: SocketSplicer, fds: readonly [number, number], cookies: [bigint, bigint], o: RelayOptions): { done: Promise<SpliceRelayResult>; progress: RelayProgress } {
  const idleMs = o.idleTimeoutMs ?? DEFAULT_IDLE_TIMEOUT_MS;
  const keepAliveMs = o.keepAliveMs ?? DEFAULT_KEEPALIVE_MS;
  for (const end of [down, up]) {
    end.setNoDelay(true);
    if (keepAliveMs > 0) end.setKeepAlive(true, keepAliveMs);
  }
  const ends = [down, up] as const;
  // What the kernel received on each socket, read while its fd is surely still ours (a closed
  // socket's fd number may already belong to another): exact at each direction's end, and as of
  // the last look when a side was reset.
  // The kernel counts a received FIN as one byte (it advances rcv_nxt); it is not payload.
  const received = [0, 0];
  const eof = [false, false];
  const look = (i: 0 | 1): ReturnType<SocketSplicer['stats']> | undefined => {
    if (ends[i].destroyed) return undefined;
    try {
      const s = k.stats(fds[i]);
      received[i] = s.bytesReceived - (eof[i] ? 1 : 0);
      return s;
    } catch {
      return undefined;
    }
  };
  const progress: RelayProgress = {
    sent: () => (look(0), received[0]!),
    received: () => (look(1), received[1]!),
  };

  const done = new Promise<SpliceRelayResult>((resolve) => {
    let idleTimer: NodeJS.Timeout | undefined;
    let timedOut = false;
    const timers = new Set<NodeJS.Timeout>();
    joinFates(down, up, (f) => {
      clearTimeout(idleTimer);
      for (const t of timers) clearTimeout(t);
      try {
        k.release(cookies[0], cookies[1]);
      } catch {
        // The entries die with the sockets' process anyway; nothing to undo here.
      }
      resolve({ sent: received[0]!, received: received[1]!, spliced: true, ...f, ...(timedOut ? { idleTimeout: true as const } : {}) });
    });

    // Bytes the verdict left to user space (it passes while the pair is being set up, and until
    // the proxy has written out what it was passed): written to the other side in order, then
    // reported, so the verdict knows when moving bytes in the kernel is safe again.
    const carry = (i: 0 | 1): void => {
      const from = ends[i];
      const to = ends[1 - i]!;
      let taken = 0;
      from.on('data', (chunk: Buffer) => {
        const ok = to.write(chunk, () => {
          taken += chunk.length;
          try {
            k.taken(cookies[i], taken);
          } catch {
            // The pair is gone (closing): nothing more will be moved in the kernel.
          }
        });
        if (!ok) {
          from.pause();
          to.once('drain', () => from.resume());
        }
      });
      // The FIN comes after the last byte the kernel moved for this direction has been queued
      // on the other socket: it counted every byte it received here, and the other socket's
      // acknowledged and queued bytes reach that number once they all went out through it.
      from.once('end', () => {
        eof[i] = true;
        look(i);
        let wait = 0;
        const check = (): void => {
          if (to.destroyed) return;
          const s = look((1 - i) as 0 | 1);
          if (s && to.writableLength === 0 && s.bytesAcked + s.outq >= received[i]!) {
            to.end();
            return;
          }
          wait = Math.min(FLUSH_POLL_MAX_MS, wait * 2 + 1);
          const t = setTimeout(() => {
            timers.delete(t);
            check();
          }, wait).unref();
          timers.add(t);
        };
        check();
      });
      from.resume();
      startReading(from);
    };
    carry(0);
    carry(1);

    if (idleMs > 0) {
      // Activity is a byte received on either socket, as the kernel timed it.
      const check = (): void => {
        const idle = Math.min(...([0, 1] as const).map((i) => look(i)?.lastDataRecvMs ?? Infinity));
        if (idle === Infinity) return;
        if (idle < idleMs) {
          idleTimer = setTimeout(check, Math.min(idleMs - idle, MAX_TIMER_MS)).unref();
          return;
        }
        timedOut = true;
        down.destroy();
        up.destroy();
      };
      idleTimer = setTimeout(check, Math.min(idleMs, MAX_TIMER_MS)).unref();
    }
  });
  return { done, progress };
}
