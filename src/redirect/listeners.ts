// The listener registry: the agent's inbound listeners per pod in the nm_listeners SOCKHASH.
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

  /** Removes a pod's listener from nm_listeners; false when none was registered. */
  unregister(podIp: string, kind: InboundKind): boolean {
    assertIPv4(podIp, 'podIp');
    assertInboundKind(kind);
    try {
      return this.#binding.mapDelete(this.#maps.listeners, encodeListenerKey(podIp, LISTENER_KIND[kind]));
    } catch (err) {
      throw nativeFailure('NM_ERR_NATIVE', `unregistering the ${kind} listener`, err, `pod ${podIp}`);
    }
  }
}
