// Who owns each pod's map entries: nm_pod_owner records the netns cookie and IP every pod UID
// was attached with, and deletion goes by that owner, so removing one pod never removes the
// entries of a newer pod that was given the same IP (docs/redirect.md "Owners").
import {
  BPF_ANY,
  NM_LISTENER_HBONE,
  NM_LISTENER_PLAINTEXT,
  decodeEnrolled,
  decodePodCfg,
  decodePodOwner,
  encodeListenerKey,
  encodePodOwner,
  ipv4Key,
  podOwnerKey,
  u64,
  type PodOwner,
} from './layout.js';
import type { MapFds } from './loader.js';
import type { NativeBinding } from './native.js';

/** What a deletion may name: an owner whose netns cookie is unknown is a pod an older agent attached. */
export interface OwnerHint {
  ip: string;
  netnsCookie?: bigint;
}

/** The pod entries that stay whatever is deleted: the attachment being made now. */
export type Keep = PodOwner | undefined;

export class PodOwners {
  readonly #b: NativeBinding;
  readonly #maps: MapFds;

  constructor(binding: NativeBinding, maps: MapFds) {
    this.#b = binding;
    this.#maps = maps;
  }

  /** The owner recorded for a pod UID, or null (never attached, or by an agent from before nm_pod_owner). */
  recorded(uid: string): PodOwner | null {
    const v = this.#b.mapLookup(this.#maps.podOwner, podOwnerKey(uid));
    return v ? decodePodOwner(v) : null;
  }

  /** Records (replaces) a pod UID's owner; returns the undo. */
  record(uid: string, owner: PodOwner): () => void {
    const key = podOwnerKey(uid);
    const prev = this.#b.mapLookup(this.#maps.podOwner, key);
    this.#b.mapUpdate(this.#maps.podOwner, key, encodePodOwner(owner), BPF_ANY);
    return () => {
      if (prev) this.#b.mapUpdate(this.#maps.podOwner, key, prev, BPF_ANY);
      else this.#b.mapDelete(this.#maps.podOwner, key);
    };
  }

  /**
   * Removes a pod UID's record; with `netnsCookie`, only while the record still names that
   * netns (another agent may have attached the UID again elsewhere since).
   */
  forget(uid: string, netnsCookie?: bigint): void {
    const rec = netnsCookie === undefined ? null : this.recorded(uid);
    if (rec && rec.netnsCookie !== netnsCookie) return;
    this.#b.mapDelete(this.#maps.podOwner, podOwnerKey(uid));
  }

  /**
   * Deletes the entries `owner` holds, and only those:
   * - nm_pod_cfg and nm_pod_conns under its netns cookie (the cfg only while it names its IP);
   * - nm_enrolled under its IP only while the entry names its netns cookie, and then its
   *   nm_listeners entries too (a listener is only ever registered for the netns nm_enrolled
   *   names). When nm_enrolled names another netns, the IP was given to a newer pod: its
   *   entries stay, and the kernel removes the old pod's listeners with their sockets.
   * For an owner without a netns cookie (a pod an older agent attached), the nm_enrolled
   * entry is taken for its own unless another pod's owner record names that entry's netns.
   * `keep` (the attachment just made, on a re-enrollment) is never deleted.
   */
  deleteOwned(uid: string, owner: OwnerHint, keep?: Keep): void {
    const b = this.#b;
    const m = this.#maps;
    const enrKey = ipv4Key(owner.ip);
    const enr = b.mapLookup(m.enrolled, enrKey);
    const enrCookie = enr ? decodeEnrolled(enr).netnsCookie : undefined;
    let cookie = owner.netnsCookie;
    if (cookie === undefined && enrCookie !== undefined && !this.#claimedByOther(uid, enrCookie)) cookie = enrCookie;

    if (cookie !== undefined && cookie !== keep?.netnsCookie) {
      const cfg = b.mapLookup(m.podCfg, u64(cookie));
      if (cfg && decodePodCfg(cfg).podIp === owner.ip) b.mapDelete(m.podCfg, u64(cookie));
      b.mapDelete(m.podConns, u64(cookie));
    }
    if (enrCookie === undefined || enrCookie !== cookie) return;
    if (keep && keep.ip === owner.ip && keep.netnsCookie === enrCookie) return;
    b.mapDelete(m.enrolled, enrKey);
    b.mapDelete(m.listeners, encodeListenerKey(owner.ip, NM_LISTENER_PLAINTEXT));
    b.mapDelete(m.listeners, encodeListenerKey(owner.ip, NM_LISTENER_HBONE));
  }

  /** Whether a pod other than `uid` is recorded with this netns cookie (a scan: older agents' pods only). */
  #claimedByOther(uid: string, cookie: bigint): boolean {
    const own = podOwnerKey(uid);
    for (let k = this.#b.mapNextKey(this.#maps.podOwner, null); k; k = this.#b.mapNextKey(this.#maps.podOwner, k)) {
      if (k.equals(own)) continue;
      const v = this.#b.mapLookup(this.#maps.podOwner, k);
      if (v && decodePodOwner(v).netnsCookie === cookie) return true;
    }
    return false;
  }
}
