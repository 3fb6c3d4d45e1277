// The one place that loads the native addon (nodemesh_native.node) and the typed interface
// of what it offers. Nothing else in src/ touches the binding.
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { errorFor, NativeError, NodemeshError, type ErrorCode } from '../errors.js';

/**
 * What the addon throws: shaped like a Node system error. `errno` is negative, as Node
 * reports it (-1 for EPERM); `libbpfLog` carries what libbpf printed (e.g. the verifier log).
 */
export interface NativeSystemError extends Error {
  errno: number;
  code: string;
  syscall: string;
  libbpfLog?: string;
}

export interface NativeProgram {
  name: string;
  section: string;
  fd: number;
  /** enum bpf_prog_type */
  type: number;
  /** enum bpf_attach_type the program expects */
  attachType: number;
}

export interface NativeMap {
  name: string;
  fd: number;
  /** enum bpf_map_type */
  type: number;
  keySize: number;
  valueSize: number;
  maxEntries: number;
}

/** A loaded BPF object; its fds stay valid until close(). */
export interface NativeBpfObject {
  programs(): NativeProgram[];
  maps(): NativeMap[];
  /** Closes program and map fds. Pinned maps and pinned links stay. */
  close(): void;
  readonly closed: boolean;
}

export interface NativeLinkInfo {
  id: number;
  /** enum bpf_link_type: 3 cgroup, 5 netns */
  type: number;
  progId: number;
  attachType: number;
  /** cgroup links: the cgroup's id (its inode number); 0 once the cgroup is gone. */
  cgroupId: bigint;
  /** netns links: the netns inode number; 0 once the netns is gone. */
  netnsIno: number;
}

export interface NativeTestRunInput {
  ctxIn?: Buffer;
  ctxOutSize?: number;
  dataIn?: Buffer;
  dataOutSize?: number;
  repeat?: number;
}

export interface NativeTestRunResult {
  retval: number;
  durationNs: number;
  ctxOut: Buffer;
  dataOut: Buffer;
}

export interface NativeRoutingInstalled {
  /** false when the identical rule was already there (a re-install, e.g. adoption). */
  ruleAdded: boolean;
  previousFwmarkAccept: number;
  previousFwmarkReflect: number;
}

export interface NativeRoutingRemoved {
  ruleRemoved: boolean;
  routeRemoved: boolean;
}

/** What a ring poller counted (native/src/ring_poller.h RingPollerStats). */
export interface NativeRingStats {
  /** Records handed to JS. */
  delivered: bigint;
  /** Records of batches dropped because maxQueuedBatches were already waiting for JS. */
  dropped: bigint;
  /** Records of the wrong size (an object whose struct nm_event differs), skipped. */
  badRecords: bigint;
  pollErrors: bigint;
  open: boolean;
}

/** A ring buffer subscription: a thread polling the ring, batches delivered on the JS thread. */
export interface NativeRingEvents {
  /** Stops and joins the poller thread; idempotent. Records not yet delivered are dropped. */
  close(): void;
  /** While paused the thread consumes nothing (tests of a consumer that falls behind). */
  setPaused(paused: boolean): void;
  stats(): NativeRingStats;
  /** Records that were in the ring before this subscription, consumed and dropped at start. */
  readonly discarded: bigint;
}

export type NativeRingBatchCallback = (records: Buffer, count: number, droppedTotal: bigint) => void;

/** The binding's exports. Arguments are validated by the callers in src/redirect/. */
export interface NativeBinding {
  isBpffs(path: string): boolean;
  /** mount("bpf", path, "bpf", 0, "mode=0700"); no-op when path is already bpffs. */
  mountBpffs(path: string): void;
  unmountBpffs(path: string): void;

  /** Opens and loads a BPF object; maps with LIBBPF_PIN_BY_NAME are pinned/reused under pinRoot. */
  loadObject(path: string, pinRoot: string, rodata: Record<string, Buffer>): Promise<NativeBpfObject>;

  /** bpf_link_create(prog, open(targetPath), attachType) and pin it at pinPath. */
  linkCreate(progFd: number, targetPath: string, attachType: number, pinPath: string): Promise<void>;
  /** bpf_link_update of the link pinned at pinPath to a new program. */
  linkUpdate(pinPath: string, progFd: number): Promise<void>;
  /** bpf_link_detach of the pinned link, then unlink of the pin. */
  linkDetach(pinPath: string): Promise<void>;
  /** null when nothing is pinned at pinPath. */
  linkInfo(pinPath: string): NativeLinkInfo | null;

  mapShape(mapFd: number): { type: number; keySize: number; valueSize: number; maxEntries: number };
  mapUpdate(mapFd: number, key: Buffer, value: Buffer, flags: number): void;
  mapLookup(mapFd: number, key: Buffer): Buffer | null;
  /** false when the key was not there. */
  mapDelete(mapFd: number, key: Buffer): boolean;
  /** The first key when key is null; null after the last one. */
  mapNextKey(mapFd: number, key: Buffer | null): Buffer | null;
  /** SOCKHASH/SOCKMAP update with a socket fd as the value. */
  sockmapUpdate(mapFd: number, key: Buffer, sockFd: number, flags: number): void;
  /** nm_orig_dst lookup keyed by the socket's netns cookie and peer; null when absent. */
  originalDst(origDstMapFd: number, sockFd: number): { ip: string; port: number } | null;

  /** A non-blocking listening TCP socket created inside the netns at netnsPath. */
  listenInNetns(netnsPath: string, host: string, port: number, backlog: number, reusePort: boolean): Promise<number>;
  /** A non-blocking, unconnected TCP socket created inside the netns at netnsPath. */
  socketInNetns(netnsPath: string, bindIp: string | null, family: 4 | 6): Promise<number>;
  /**
   * `count` such sockets, made in one visit to the netns. With transparentMark they are
   * delivery sockets instead: IPv4, IP_TRANSPARENT, SO_MARK, bound to lo, unbound (bindIp null).
   */
  socketsInNetns(netnsPath: string, bindIp: string | null, family: 4 | 6, count: number, transparentMark?: number | null): Promise<number[]>;
  /** The fwmark rule, the local route and the two sysctls of inbound delivery, in a netns. */
  installDeliveryRouting(netnsPath: string, mark: number, mask: number, table: number, priority: number): Promise<NativeRoutingInstalled>;
  /** Removes exactly that rule and route; writes the sysctls back (-1 leaves one alone). */
  removeDeliveryRouting(netnsPath: string, mark: number, mask: number, table: number, priority: number, fwmarkAccept: number, fwmarkReflect: number): Promise<NativeRoutingRemoved>;
  /** getsockopt(SO_NETNS_COOKIE) */
  netnsCookie(fd: number): bigint;
  netnsCookieOfPath(netnsPath: string): Promise<bigint>;
  /** getsockopt(SO_COOKIE) */
  socketCookie(fd: number): bigint;

  /** bpf_prog_attach(prog, nm_splice, BPF_SK_SKB_STREAM_VERDICT). */
  spliceAttach(progFd: number, sockhashFd: number): void;
  /** Pairs two established TCP sockets in nm_splice (native/src/splice.h); their cookies. */
  splicePair(sockhashFd: number, peerFd: number, takenFd: number, fdA: number, fdB: number): [bigint, bigint];
  spliceRelease(sockhashFd: number, peerFd: number, takenFd: number, cookieA: bigint, cookieB: bigint): void;
  spliceTaken(sockhashFd: number, peerFd: number, takenFd: number, cookie: bigint, total: number): void;
  /** TCP_INFO and SIOCOUTQ: [bytesReceived, bytesAcked, outq, lastDataRecvMs, lastDataSentMs]. */
  tcpStats(fd: number): [number, number, number, number, number];

  /** BPF_PROG_RUN */
  progTestRun(progFd: number, input: NativeTestRunInput): Promise<NativeTestRunResult>;

  /**
   * Polls a BPF_MAP_TYPE_RINGBUF on its own thread: records of exactly recordSize bytes, in
   * batches of at most maxBatch or what came within maxDelayMs of a batch's first record,
   * delivered through a ThreadSafeFunction that queues at most maxQueuedBatches (beyond
   * that a batch is dropped and counted, never waited for). Does not keep the process alive.
   */
  RingEvents: new (mapFd: number, recordSize: number, maxBatch: number, maxDelayMs: number, maxQueuedBatches: number, onBatch: NativeRingBatchCallback) => NativeRingEvents;
}

/** The package root: two levels above this file, both as src/redirect and as dist/redirect. */
export function packageRoot(): string {
  return resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
}

/**
 * Where the addon's build output lives (holding Release/ and Debug/): `NODEMESH_ADDON_DIR`
 * when set, else `<package root>/native/build`.
 */
export function defaultAddonDir(): string {
  return process.env.NODEMESH_ADDON_DIR || join(packageRoot(), 'native', 'build');
}

/**
 * Loads nodemesh_native.node from `<addonDir>/Release`, then `<addonDir>/Debug`. Throws
 * NM_ERR_NATIVE_MISSING naming every path tried, why each failed, and the fix.
 */
export function loadNative(addonDir: string = defaultAddonDir()): NativeBinding {
  const require = createRequire(import.meta.url);
  const tried: string[] = [];
  for (const config of ['Release', 'Debug']) {
    const file = join(addonDir, config, 'nodemesh_native.node');
    try {
      return require(file) as NativeBinding;
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      const why = e.code === 'MODULE_NOT_FOUND' ? 'not found' : (e.message ?? String(err)).split('\n')[0];
      tried.push(`${file} (${why})`);
    }
  }
  throw new NativeError('NM_ERR_NATIVE_MISSING', `the native addon nodemesh_native.node could not be loaded; tried ${tried.join(', ')}. ` +
      'Run `make build` (or `make addon`) in the nodemesh checkout.',
    { tried },
  );
}

let binding: NativeBinding | undefined;

/** The process-wide binding, loaded on first use. */
export function native(): NativeBinding {
  binding ??= loadNative();
  return binding;
}

export function isNativeSystemError(err: unknown): err is NativeSystemError {
  return err instanceof Error && typeof (err as Partial<NativeSystemError>).syscall === 'string';
}

/**
 * Wraps an addon failure into a NodemeshError that keeps the system error's facts:
 * details carry errno, syscall and sysCode ('EPERM'), `cause` the original error.
 */
export function nativeFailure(code: ErrorCode, what: string, err: unknown, where?: string): NodemeshError {
  if (err instanceof NodemeshError) return err;
  if (isNativeSystemError(err)) {
    return errorFor(code, `${what}: ${err.message}`, {
      where,
      cause: err,
      errno: err.errno,
      syscall: err.syscall,
      sysCode: err.code,
    });
  }
  return errorFor(code, `${what}: ${err instanceof Error ? err.message : String(err)}`, { where, cause: err });
}
