// The Redirector: the facade other folders use over the loader, per-pod attachments, the
// listener registry, original-destination lookup, the kernel events and the observer of
// pods that are not enrolled (each in its own file here).
import { NativeError } from '../errors.js';
import { PodAttachments } from './attachments.js';
import type { KernelEventBatch } from './events.js';
import { KernelEventStream, type KernelEventStats } from './kernel-events.js';
import { ListenerRegistry } from './listeners.js';
import { destroyPinRoot, loadRedirect, type LoadedRedirect } from './loader.js';
import { native, type NativeBinding } from './native.js';
import { CgroupObservers } from './observe.js';
import { lookupOriginalDst } from './original-dst.js';
import { KernelSplice } from './splice.js';
import { readOrigDstStats } from './stats.js';
import type { InboundKind, OrigDstStats, PodAttachment, PodRedirectSpec, RedirectorOptions, SocketAddress } from './types.js';

/** Test-only access to the loaded object (program and map fds); not exported by index.ts. */
export const kTestHooks = Symbol('nodemesh.redirect.testHooks');
export interface RedirectorTestHooks {
  binding: NativeBinding;
  progFd(name: string): number;
  mapFd(name: string): number;
  /** The kernel event poller: pause it (the ring fills), read its counters. */
  kernelEvents: {
    setPaused(paused: boolean): void;
    stats(): KernelEventStats | null;
  };
}

/** Map fds a proxy worker uses (Redirector.workerMaps, workerKernel). */
export interface WorkerMaps {
  origDst: number;
  splice?: [number, number, number];
}

/** In a proxy worker thread: original-destination lookups and the splice over the main thread's maps. */
export function workerKernel(m: WorkerMaps): { originalDst: { originalDst(fd: number): SocketAddress | null }; splice?: KernelSplice } {
  const b = native();
  return {
    originalDst: { originalDst: (fd) => lookupOriginalDst(b, m.origDst, fd) },
    ...(m.splice ? { splice: KernelSplice.fromMaps(b, m.splice) } : {}),
  };
}

export class Redirector {
  /** The bpffs directory this redirector pins under. */
  readonly pinRoot: string;
  /** Mount point of the cgroup v2 hierarchy pod cgroups must live under. */
  readonly cgroupRoot: string;
  readonly outboundPort: number;
  readonly hbonePort: number;

  #loaded: LoadedRedirect;
  #pods: PodAttachments;
  #listeners: ListenerRegistry;
  #events: KernelEventStream;
  #observers: CgroupObservers;
  #splice: KernelSplice | Error;
  #closed = false;

  private constructor(loaded: LoadedRedirect) {
    this.#loaded = loaded;
    this.pinRoot = loaded.pinRoot;
    this.cgroupRoot = loaded.cgroupRoot;
    this.outboundPort = loaded.outboundPort;
    this.hbonePort = loaded.hbonePort;
    this.#pods = new PodAttachments(loaded);
    this.#listeners = new ListenerRegistry(loaded.binding, loaded.maps);
    this.#events = new KernelEventStream(loaded.binding, loaded.maps);
    this.#observers = new CgroupObservers(loaded);
    try {
      this.#splice = KernelSplice.attach(loaded);
    } catch (err) {
      this.#splice = err as Error;
    }
  }

  /**
   * The same-node kernel splice (src/proxy/splice.ts), or why this kernel cannot do it (the
   * proxy then relays those connections in user space, as before).
   */
  get splicer(): KernelSplice | Error {
    return this.#splice;
  }

  /**
   * What a proxy worker thread needs of the loaded programs (src/agent/proxy-worker.ts): the
   * map fds of original-destination lookups and of the splice. Fds belong to the process, so
   * the worker uses them as they are; they stay valid while this Redirector is open.
   */
  workerMaps(): WorkerMaps {
    this.#assertOpen();
    return { origDst: this.#loaded.maps.origDst, ...(this.#splice instanceof Error ? {} : { splice: this.#splice.maps }) };
  }

  /**
   * Loads the redirection programs, pinning (or reusing) their maps under `<pinRoot>/maps`.
   * Mounts bpffs at /sys/fs/bpf when the node has none. Needs root.
   */
  static async open(options: RedirectorOptions): Promise<Redirector> {
    return new Redirector(await loadRedirect(options));
  }

  /** The directory holding one pod's link pins. */
  podDir(uid: string): string {
    return this.#pods.podDir(uid);
  }

  /**
   * Captures one pod: attaches connect4/6, sockops and getpeername4/6 to its cgroup and
   * sk_lookup to its netns (links pinned under `<pinRoot>/pods/<uid>/`), and writes its
   * nm_pod_cfg and nm_enrolled entries. Idempotent. Links already pinned for the same
   * cgroup/netns (an agent restart) are updated to the programs loaded now, not attached
   * twice. On failure, what this call attached or wrote is undone.
   *
   * Then it installs the pod's delivery routing (installDeliveryRouting: a fwmark rule, a
   * local route, two per-netns sysctls), which inbound delivery with the client's address
   * needs. If that fails the pod stays enrolled (NM_ERR_ENROLL, details.step
   * 'delivery-routing'): its inbound fails closed rather than being delivered another way.
   *
   * Once enrolled, inbound SYNs to the pod IP are dropped until registerInboundListener
   * supplies the agent's listeners (fail closed).
   */
  async attachPod(spec: PodRedirectSpec): Promise<void> {
    this.#assertOpen();
    await this.#pods.attach(spec);
  }

  /** The links pinned for a pod (what attachPod left, or a previous agent did); null if none. */
  podAttachment(uid: string): PodAttachment | null {
    return this.#pods.attachment(uid);
  }

  /**
   * Releases one pod: detaches and unpins its links, removes its pin directory and deletes
   * the map entries it owns (nm_pod_cfg, nm_pod_conns, nm_pod_owner; nm_enrolled and
   * nm_listeners only while nm_enrolled still names its netns: a newer pod given the same IP
   * keeps its own). Which netns and IP the UID was attached with comes from this process, or
   * after a restart from nm_pod_owner; `ip` is only needed for a pod an agent from before
   * nm_pod_owner attached (without either, only the links are removed).
   * For a pod this process attached, its delivery routing is removed too and the two
   * sysctls written back (nothing to do when its netns is already gone).
   */
  async detachPod(uid: string, ip?: string): Promise<void> {
    this.#assertOpen();
    await this.#pods.detach(uid, ip);
  }

  /** UIDs of pods that have pinned links: the pods a restarted agent must adopt. */
  listPinnedPods(): string[] {
    return this.#pods.listPinned();
  }

  /**
   * Puts the agent's listener for a pod into nm_listeners, so sk_lookup steers the pod's
   * inbound SYNs to it. The socket must be a listening TCP socket created inside the pod's
   * netns (a listener from another netns would be a silent black hole).
   */
  registerInboundListener(podIp: string, kind: InboundKind, fd: number): void {
    this.#assertOpen();
    this.#listeners.register(podIp, kind, fd);
  }

  /**
   * Registers fd for the pod only when no listener is registered at all (its agent closed it
   * or exited); another live socket's entry, e.g. a newer agent's, is left alone. True when
   * it registered. This is how the agent that stays takes its pods' inbound back.
   */
  ensureInboundListener(podIp: string, kind: InboundKind, fd: number): boolean {
    this.#assertOpen();
    return this.#listeners.ensure(podIp, kind, fd);
  }

  /** Whether fd is the socket registered for the pod (an agent asks whether its own still is). */
  isInboundListener(podIp: string, kind: InboundKind, fd: number): boolean {
    this.#assertOpen();
    return this.#listeners.isRegistered(podIp, kind, fd);
  }

  /** The SO_COOKIE of the socket registered for the pod, or null when none is. */
  inboundListenerCookie(podIp: string, kind: InboundKind): bigint | null {
    this.#assertOpen();
    return this.#listeners.registeredCookie(podIp, kind);
  }

  /**
   * Removes a pod's listener from nm_listeners; false when none was registered. With `fd`,
   * only when that socket is the one registered (owner-checked).
   */
  unregisterInboundListener(podIp: string, kind: InboundKind, fd?: number): boolean {
    this.#assertOpen();
    return this.#listeners.unregister(podIp, kind, fd);
  }

  /**
   * The destination a captured connection was originally headed to, for a socket accepted
   * on the outbound listener; null when the connection was not captured (or already closed).
   */
  originalDst(fd: number): SocketAddress | null {
    this.#assertOpen();
    return lookupOriginalDst(this.#loaded.binding, this.#loaded.maps.origDst, fd);
  }

  /**
   * How full the node-wide original-destination maps are and what the kernel counted: open
   * captured connections per pod, quota refusals, evictions (docs/redirect.md "Bounded
   * kernel state"). Read at a metrics scrape or /config_dump, never per connection.
   */
  origDstStats(): OrigDstStats {
    this.#assertOpen();
    const { binding, maps, origDstCapacity, origDstPodQuota } = this.#loaded;
    return readOrigDstStats(binding, maps, { capacity: origDstCapacity, podQuota: origDstPodQuota }, (c) => this.#pods.ownerOfNetns(c));
  }

  /**
   * Subscribes to the kernel events (docs/capture.md "Kernel events"): what the programs
   * decided for every connect, inbound SYN and close of the node's pods, in batches (at most
   * 256 events or 50 ms) on the JS thread. The first subscriber starts the ring poller thread
   * and turns emission on; the last unsubscribe turns it off and stops the thread, so with no
   * subscriber the programs pay one array lookup. Events from before the first subscription
   * are discarded. A listener that throws is logged and keeps its subscription.
   * The ring has one reader per node: subscribe in one process (the agent).
   * Returns the unsubscribe function (idempotent).
   */
  onKernelEvents(cb: (batch: KernelEventBatch) => void): () => void {
    this.#assertOpen();
    return this.#events.subscribe(cb);
  }

  /**
   * Events lost so far: those the programs could not write because the ring was full
   * (nm_events_lost, kept with the pinned maps across agent restarts) plus batches this
   * process dropped because its JS thread was behind. A slow consumer costs events, never
   * the data path.
   */
  kernelEventsLost(): bigint {
    this.#assertOpen();
    return this.#events.lost();
  }

  /**
   * Observes the pods below a cgroup (the node's pod cgroup parent, e.g. the kubelet's
   * `kubepods`, or the simulator's `<root>/nodemesh-sim`): their connects and closes are
   * reported as kernel events with `enrolled: false` and reason 'observed'. Observation only:
   * nothing is redirected, refused or changed, and enrolled pods below it are skipped (their
   * own programs report them). Links pinned under `<pinRoot>/observe/`, so they outlive the
   * agent; idempotent (an earlier agent's links are updated to the programs loaded now).
   */
  async observeCgroup(cgroupPath: string): Promise<void> {
    this.#assertOpen();
    await this.#observers.observe(cgroupPath);
  }

  /** Detaches the observer of a cgroup; false when none was attached. */
  async unobserveCgroup(cgroupPath: string): Promise<boolean> {
    this.#assertOpen();
    return this.#observers.unobserve(cgroupPath);
  }

  /** Detaches every observer (this agent's or an earlier one's); how many there were. */
  async unobserveAllCgroups(): Promise<number> {
    this.#assertOpen();
    return this.#observers.unobserveAll();
  }

  /** Ids (inode numbers) of the cgroups observed now. */
  observedCgroups(): bigint[] {
    this.#assertOpen();
    return this.#observers.observed();
  }

  /**
   * Closes the program and map fds, and ends any kernel event subscription. Pins (maps and
   * links) stay, so capture continues.
   */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#events.close();
    this.#loaded.object.close();
  }

  get closed(): boolean {
    return this.#closed;
  }

  /**
   * Removes everything under pinRoot: detaches every pod's links, unpins the maps and
   * removes the pin root directory itself. For teardown and tests; needs root.
   */
  static async destroyAll(pinRoot: string): Promise<void> {
    await destroyPinRoot(pinRoot);
  }

  /** Test-only: the binding and the fds of the loaded object. */
  [kTestHooks](): RedirectorTestHooks {
    this.#assertOpen();
    const { binding, object, progs } = this.#loaded;
    const maps = new Map(object.maps().map((m) => [m.name, m.fd]));
    return {
      binding,
      progFd: (name) => {
        const p = progs.get(name);
        if (!p) throw new RangeError(`no program ${name}`);
        return p.fd;
      },
      mapFd: (name) => {
        const fd = maps.get(name);
        if (fd === undefined) throw new RangeError(`no map ${name}`);
        return fd;
      },
      kernelEvents: {
        setPaused: (paused) => this.#events.setPaused(paused),
        stats: () => this.#events.stats(),
      },
    };
  }

  #assertOpen(): void {
    if (this.#closed) throw new NativeError('NM_ERR_REDIRECT_CLOSED', 'this Redirector was closed; open a new one');
  }
}
