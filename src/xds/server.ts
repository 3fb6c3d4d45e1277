// The control plane's delta ADS server: holds the current resources of each type with a
// version per resource (a hash of its bytes), and pushes to every stream only what changed
// since what that stream holds. A stream that does not keep up is pushed nothing more until
// it drains; then it gets one response per type with what changed meanwhile.
import { createHash } from 'node:crypto';
import { EventEmitter } from 'node:events';
import * as grpc from '@grpc/grpc-js';
import { XdsError } from '../errors.js';
import { log as rootLog, type Logger } from '../log.js';
import { fromStruct, type JsonValue, type PbDeltaRequest, type PbDeltaResponse, type PbResource } from './proto.js';

export interface EncodedResource {
  name: string;
  /** The serialized message (the Any's value). */
  value: Buffer;
}

/** The version of a resource: a hash of its serialized bytes, so equal bytes never re-push. */
export function resourceVersion(value: Uint8Array): string {
  return createHash('sha256').update(value).digest('hex').slice(0, 16);
}

interface Stored {
  value: Buffer;
  version: string;
}

interface Subscription {
  wildcard: boolean;
  names: Set<string>;
  /** What the client holds, as far as this server knows: name → version. */
  known: Map<string, string>;
}

export interface NackRecord {
  node: string;
  typeUrl: string;
  nonce: string;
  message: string;
  at: string;
}

export interface StreamInfo {
  id: number;
  node: string;
  nodeId: string;
  metadata: Record<string, JsonValue>;
  connectedAt: string;
  types: Record<string, { resources: number; wildcard: boolean; lastAckNonce: string; lastNack?: NackRecord }>;
  /**
   * Flow control: `blocked` while the stream's last write() said its buffer was full (the
   * client reads slower than we push); `queued`, the types with a response owed once it
   * drains (one each, however many changes came meanwhile); `buffered`, the responses
   * written but not yet sent.
   */
  backpressure: { blocked: boolean; queued: string[]; buffered: number; coalesced: number };
}

export interface RequestEvent {
  stream: number;
  node: string;
  request: PbDeltaRequest;
}

type Events = {
  /** Every request a stream sends (for debugging and tests). */
  request: [RequestEvent];
  nack: [NackRecord];
  push: [{ stream: number; node: string; typeUrl: string; resources: string[]; removed: string[]; nonce: string }];
};

export interface XdsServerOptions {
  /** The types this server serves; a subscription to another type is answered with no resources. */
  typeUrls: string[];
  logger?: Logger;
}

type Call = grpc.ServerDuplexStream<PbDeltaRequest, PbDeltaResponse>;

class Connection {
  readonly subs = new Map<string, Subscription>();
  readonly lastAck = new Map<string, string>();
  readonly lastNack = new Map<string, NackRecord>();
  nonce = 0;
  /** write() returned false: nothing more is written until 'drain'. */
  blocked = false;
  /** Types owed a response at 'drain' → whether it must be sent even when empty (a first subscribe). */
  readonly queued = new Map<string, boolean>();
  /** Pushes folded into a queued one. */
  coalesced = 0;
  nodeId = '';
  metadata: Record<string, JsonValue> = {};
  readonly connectedAt = new Date().toISOString();
  constructor(
    readonly id: number,
    readonly node: string,
    readonly call: Call,
  ) {}
}

export class XdsServer extends EventEmitter<Events> {
  readonly #resources = new Map<string, Map<string, Stored>>();
  readonly #conns = new Set<Connection>();
  readonly #log: Logger;
  #nextId = 1;
  #nacks: NackRecord[] = [];

  constructor(opts: XdsServerOptions) {
    super();
    this.#log = (opts.logger ?? rootLog).child({ component: 'xds-server' });
    for (const t of opts.typeUrls) this.#resources.set(t, new Map());
  }

  /**
   * The handler to register for DeltaAggregatedResources when callers are not authenticated
   * (tests, tools): every stream's node is "unknown".
   */
  readonly handler = (call: Call): void => this.serve(call, 'unknown');

  /**
   * Serves one stream for a caller already authenticated as `node`: the control plane's
   * node-auth wrapper calls this once it knows who is calling.
   */
  serve(call: Call, node: string): void {
    this.#onStream(call, node);
  }

  /** Replaces every resource of a type, then pushes the difference to each stream. */
  setResources(typeUrl: string, resources: Iterable<EncodedResource>): { changed: string[]; removed: string[] } {
    const cur = this.#resources.get(typeUrl);
    if (!cur) throw new XdsError('NM_ERR_XDS_RESOURCE', `type ${typeUrl} is not served`);
    const next = new Map<string, Stored>();
    for (const r of resources) next.set(r.name, { value: r.value, version: resourceVersion(r.value) });
    const changed = [...next].filter(([n, s]) => cur.get(n)?.version !== s.version).map(([n]) => n);
    const removed = [...cur.keys()].filter((n) => !next.has(n));
    this.#resources.set(typeUrl, next);
    if (changed.length + removed.length > 0) {
      this.#log.debug({ typeUrl, changed: changed.length, removed: removed.length }, 'resources changed');
      for (const c of this.#conns) this.#push(c, typeUrl, false);
    }
    return { changed, removed };
  }

  /** The current resources of a type: name → version. */
  versions(typeUrl: string): Map<string, string> {
    return new Map([...(this.#resources.get(typeUrl) ?? new Map<string, Stored>())].map(([n, s]) => [n, s.version]));
  }

  streams(): StreamInfo[] {
    return [...this.#conns].map((c) => ({
      id: c.id,
      node: c.node,
      nodeId: c.nodeId,
      metadata: c.metadata,
      connectedAt: c.connectedAt,
      types: Object.fromEntries(
        [...c.subs].map(([t, s]) => [
          t,
          { resources: s.known.size, wildcard: s.wildcard, lastAckNonce: c.lastAck.get(t) ?? '', ...(c.lastNack.has(t) ? { lastNack: c.lastNack.get(t)! } : {}) },
        ]),
      ),
      backpressure: { blocked: c.blocked, queued: [...c.queued.keys()], buffered: c.call.writableLength, coalesced: c.coalesced },
    }));
  }

  /** The most recent NACKs (up to 100), newest last. */
  nacks(): NackRecord[] {
    return [...this.#nacks];
  }

  /** Ends every stream (the clients reconnect elsewhere or later). */
  closeAll(): void {
    for (const c of this.#conns) c.call.end();
    this.#conns.clear();
  }

  #onStream(call: Call, node: string): void {
    const conn = new Connection(this.#nextId++, node, call);
    this.#conns.add(conn);
    const log = this.#log.child({ stream: conn.id, node });
    log.info({ peer: call.getPeer() }, 'xDS stream opened');
    const close = (): void => {
      if (this.#conns.delete(conn)) log.info('xDS stream closed');
    };
    call.on('data', (req: PbDeltaRequest) => {
      try {
        this.#onRequest(conn, req, log);
      } catch (err) {
        log.error({ err }, 'failed to handle an xDS request');
      }
    });
    call.on('end', () => {
      close();
      call.end();
    });
    call.on('error', close);
    call.on('cancelled', close);
    call.on('close', close);
  }

  #onRequest(c: Connection, req: PbDeltaRequest, log: Logger): void {
    this.emit('request', { stream: c.id, node: c.node, request: req });
    if (req.node) {
      c.nodeId = req.node.id;
      c.metadata = fromStruct(req.node.metadata);
    }
    const typeUrl = req.typeUrl;
    let sub = c.subs.get(typeUrl);
    if (req.responseNonce) {
      if (req.errorDetail && (req.errorDetail.code !== 0 || req.errorDetail.message)) {
        const rec: NackRecord = { node: c.node, typeUrl, nonce: req.responseNonce, message: req.errorDetail.message, at: new Date().toISOString() };
        c.lastNack.set(typeUrl, rec);
        this.#nacks.push(rec);
        if (this.#nacks.length > 100) this.#nacks.shift();
        log.warn({ err: new XdsError('NM_ERR_XDS_RESOURCE', rec.message), typeUrl, nonce: rec.nonce }, 'the agent rejected resources (NACK)');
        this.emit('nack', rec);
      } else {
        c.lastAck.set(typeUrl, req.responseNonce);
        c.lastNack.delete(typeUrl);
      }
    }
    const subscribe = req.resourceNamesSubscribe ?? [];
    const unsubscribe = req.resourceNamesUnsubscribe ?? [];
    if (!sub) {
      // First request of this type on this stream: an empty list (legacy) or "*" is a wildcard.
      sub = {
        wildcard: subscribe.length === 0 || subscribe.includes('*'),
        names: new Set(subscribe.filter((n) => n !== '*')),
        known: new Map(Object.entries(req.initialResourceVersions ?? {})),
      };
      c.subs.set(typeUrl, sub);
      this.#push(c, typeUrl, true);
      return;
    }
    if (subscribe.length + unsubscribe.length === 0) return; // a plain ACK/NACK
    for (const n of subscribe) {
      if (n === '*') sub.wildcard = true;
      else sub.names.add(n);
      // A re-subscribe asks for the resource again even when the client had it.
      sub.known.delete(n);
    }
    for (const n of unsubscribe) {
      if (n === '*') sub.wildcard = false;
      else sub.names.delete(n);
    }
    this.#push(c, typeUrl, false);
  }

  /**
   * Sends a stream what changed of one type since what it holds. While the stream is
   * blocked (its buffer is full), the push is only noted, once per type: the diff is taken
   * when it drains, against the resources of that moment, so a later change replaces an
   * earlier one and a slow client never makes the server buffer more than one response
   * per type beyond the stream's own high-water mark.
   */
  #push(c: Connection, typeUrl: string, always: boolean): void {
    const sub = c.subs.get(typeUrl);
    if (!sub) return;
    if (c.blocked) {
      if (c.queued.has(typeUrl)) c.coalesced++;
      c.queued.set(typeUrl, always || c.queued.get(typeUrl) === true);
      return;
    }
    const cur = this.#resources.get(typeUrl) ?? new Map<string, Stored>();
    const wanted = (n: string) => sub.wildcard || sub.names.has(n);
    const resources: PbResource[] = [];
    for (const [name, s] of cur) {
      if (!wanted(name) || sub.known.get(name) === s.version) continue;
      resources.push({ name, version: s.version, resource: { type_url: typeUrl, value: s.value } });
    }
    const removed: string[] = [];
    for (const name of sub.known.keys()) if (!cur.has(name) || !wanted(name)) removed.push(name);
    if (!always && resources.length === 0 && removed.length === 0) return;
    for (const r of resources) sub.known.set(r.name, r.version);
    for (const n of removed) sub.known.delete(n);
    const nonce = String(++c.nonce);
    const more = c.call.write({ typeUrl, nonce, resources, removedResources: removed, systemVersionInfo: '' });
    this.emit('push', { stream: c.id, node: c.node, typeUrl, resources: resources.map((r) => r.name), removed, nonce });
    if (!more) {
      // The response is buffered; what comes next waits for the client to read.
      c.blocked = true;
      c.call.once('drain', () => this.#drained(c));
    }
  }

  /** The stream took its buffer: sends each type owed, each with what changed by now. */
  #drained(c: Connection): void {
    c.blocked = false;
    if (!this.#conns.has(c)) return;
    const owed = [...c.queued];
    c.queued.clear();
    // A push that blocks again queues the types after it once more.
    for (const [typeUrl, always] of owed) this.#push(c, typeUrl, always);
  }
}
