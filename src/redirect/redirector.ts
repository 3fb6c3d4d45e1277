// The Redirector: the facade other folders use over the loader, per-pod attachments, the
// listener registry and original-destination lookup (each in its own file here).
import { NativeError } from '../errors.js';
import { PodAttachments } from './attachments.js';
import { ListenerRegistry } from './listeners.js';
import { destroyPinRoot, loadRedirect, type LoadedRedirect } from './loader.js';
import type { NativeBinding } from './native.js';
import { lookupOriginalDst } from './original-dst.js';
import type { InboundKind, PodAttachment, PodRedirectSpec, RedirectorOptions, SocketAddress } from './types.js';

/** Test-only access to the loaded object (program and map fds); not exported by index.ts. */
export const kTestHooks = Symbol('nodemesh.redirect.testHooks');
export interface RedirectorTestHooks {
  binding: NativeBinding;
  progFd(name: string): number;
  mapFd(name: string): number;
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
  #closed = false;

  private constructor(loaded: LoadedRedirect) {
    this.#loaded = loaded;
    this.pinRoot = loaded.pinRoot;
    this.cgroupRoot = loaded.cgroupRoot;
    this.outboundPort = loaded.outboundPort;
    this.hbonePort = loaded.hbonePort;
    this.#pods = new PodAttachments(loaded);
    this.#listeners = new ListenerRegistry(loaded.binding, loaded.maps);
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
   * its map entries (nm_enrolled, nm_pod_cfg, nm_listeners). Pass `ip` when this process did
   * not attach the pod itself (after a restart); without it only the links are removed.
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

  /** Removes a pod's listener from nm_listeners; false when none was registered. */
  unregisterInboundListener(podIp: string, kind: InboundKind): boolean {
    this.#assertOpen();
    return this.#listeners.unregister(podIp, kind);
  }

  /**
   * The destination a captured connection was originally headed to, for a socket accepted
   * on the outbound listener; null when the connection was not captured (or already closed).
   */
  originalDst(fd: number): SocketAddress | null {
    this.#assertOpen();
    return lookupOriginalDst(this.#loaded.binding, this.#loaded.maps.origDst, fd);
  }

  /** Closes the program and map fds. Pins (maps and links) stay, so capture continues. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
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
    };
  }

  #assertOpen(): void {
    if (this.#closed) throw new NativeError('NM_ERR_REDIRECT_CLOSED', 'this Redirector was closed; open a new one');
  }
}
