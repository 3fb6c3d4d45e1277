// The listener registry: the agent's inbound listeners per pod in the nm_listeners SOCKHASH,
// each entry owned by the socket in it (its cookie), so one agent never removes another's.
import { AgentError } from '../errors.js';
import { BPF_ANY, NM_LISTENER_HBONE, NM_LISTENER_PLAINTEXT, decodeEnrolled, encodeListenerKey, ipv4Key } from './layout.js';
import type { MapFds } from './loader.js';
import { nativeFailure, type NativeBinding } from './native.js';
import type { InboundKind } from './types.js';
import { assertFd, assertIPv4, assertInboundKind } from './validate.js';

const LISTENER_KIND: Record<InboundKind, number> = { plaintext: NM_LISTENER_PLAINTEXT, hbone: NM_LISTENER_HBONE };

/** Registers and unregisters the sockets sk_lookup steers a pod's inbound SYNs to. */
export class ListenerRegistry {
  readonly #binding: NativeBinding;
  readonly #maps: MapFds;

  constructor(binding: NativeBinding, maps: MapFds) {
    this.#binding = binding;
    this.#maps = maps;
  }

  /** See Redirector.registerInboundListener. */
  register(podIp: string, kind: InboundKind, fd: number): void {
    assertIPv4(podIp, 'podIp');
    assertInboundKind(kind);
    assertFd(fd);
    // Catch the black hole early: an enrolled pod records its netns cookie.
    const enrolled = this.#binding.mapLookup(this.#maps.enrolled, ipv4Key(podIp));
    if (enrolled) {
      const want = decodeEnrolled(enrolled).netnsCookie;
      let got: bigint;
      try {
        got = this.#binding.netnsCookie(fd);
      } catch (err) {
        throw nativeFailure('NM_ERR_NATIVE', `reading the netns of listener fd ${fd}`, err, `pod ${podIp}`);
      }
      if (got !== want) {
        throw new AgentError('NM_ERR_ENROLL', `the ${kind} listener (fd ${fd}) lives in another network namespace than the pod; ` +
            'create it inside the pod netns with listenInNetns(), or its SYNs would vanish',
          { where: `pod ${podIp}` },
        );
      }
    }
    try {
      this.#binding.sockmapUpdate(this.#maps.listeners, encodeListenerKey(podIp, LISTENER_KIND[kind]), fd, BPF_ANY);
    } catch (err) {
      throw nativeFailure('NM_ERR_NATIVE', `registering the ${kind} listener (fd ${fd}; it must be a listening TCP socket)`, err, `pod ${podIp}`);
    }
  }

  /**
   * The cookie (SO_COOKIE) of the socket registered for the pod, or null when none is: a
   * SOCKHASH answers a lookup from user space with the socket's cookie. Closing a socket
   * removes its entry, so null also means "its agent closed it or exited".
   */
  registeredCookie(podIp: string, kind: InboundKind): bigint | null {
    assertIPv4(podIp, 'podIp');
    assertInboundKind(kind);
    let v: Buffer | null;
    try {
      v = this.#binding.mapLookup(this.#maps.listeners, encodeListenerKey(podIp, LISTENER_KIND[kind]));
    } catch (err) {
      throw nativeFailure('NM_ERR_NATIVE', `looking up the ${kind} listener`, err, `pod ${podIp}`);
    }
    return v && v.length >= 8 ? v.readBigUInt64LE(0) : null;
  }

  /** Whether the socket registered for the pod is fd's (compared by SO_COOKIE). */
  isRegistered(podIp: string, kind: InboundKind, fd: number): boolean {
    assertFd(fd);
    const registered = this.registeredCookie(podIp, kind);
    if (registered === null) return false;
    try {
      return registered === this.#binding.socketCookie(fd);
    } catch (err) {
      throw nativeFailure('NM_ERR_NATIVE', `reading SO_COOKIE of listener fd ${fd}`, err, `pod ${podIp}`);
    }
  }

  /**
   * Registers fd when the pod has no listener registered at all, and leaves any other
   * socket's entry alone (another agent's, during an upgrade). True when it registered.
   */
  ensure(podIp: string, kind: InboundKind, fd: number): boolean {
    if (this.registeredCookie(podIp, kind) !== null) return false;
    this.register(podIp, kind, fd);
    return true;
  }

  /**
   * Removes a pod's listener from nm_listeners; false when none was registered. With `fd`,
   * only when the registered socket is that one (its owner): an agent never removes the
   * listener another agent registered for the same pod.
   */
  unregister(podIp: string, kind: InboundKind, fd?: number): boolean {
    assertIPv4(podIp, 'podIp');
    assertInboundKind(kind);
    if (fd !== undefined && !this.isRegistered(podIp, kind, fd)) return false;
    try {
      return this.#binding.mapDelete(this.#maps.listeners, encodeListenerKey(podIp, LISTENER_KIND[kind]));
    } catch (err) {
      throw nativeFailure('NM_ERR_NATIVE', `unregistering the ${kind} listener`, err, `pod ${podIp}`);
    }
  }
}
