// The node agent's delta ADS client: subscribes to workloads/services and authorizations (and
// nodemesh's L7 types: routes, RequestAuthentications), validates each resource with one typed
// handler per type, ACKs or NACKs, and keeps the last good state across NACKs and
// disconnections; reconnects with backoff and resumes from the versions it holds
// (initial_resource_versions). What it holds can be snapshotted and restored (the agent
// persists it), and a restored snapshot resumes exactly as a reconnect does.
import { EventEmitter } from 'node:events';
import * as grpc from '@grpc/grpc-js';
import { errorFor, XdsError } from '../errors.js';
import { log as rootLog, type Logger } from '../log.js';
import { authMetadata, controlPlaneClient, type ControlPlaneConnection } from './credentials.js';
import {
  handleAddresses,
  handleAuthorizations,
  handleRequestAuthns,
  handleServiceRoutes,
  KINDS,
  type HeldRejection,
  type HeldResource,
  type Rejection,
  type ResourceHandler,
  type ResourceUpdate,
  type XdsSnapshot,
} from './handlers.js';
import { adsService, toStruct, TYPE_ADDRESS, TYPE_AUTHORIZATION, TYPE_REQUEST_AUTHN, TYPE_SERVICE_ROUTES, type JsonValue, type PbDeltaRequest, type PbDeltaResponse } from './proto.js';
import type { ProxyState } from '../state/index.js';

export { handleAddresses, handleAuthorizations, handleRequestAuthns, handleServiceRoutes };
export type { HeldRejection, HeldResource, Rejection, ResourceHandler, ResourceUpdate, XdsSnapshot };

export interface XdsClientOptions extends ControlPlaneConnection {
  state: ProxyState;
  /** xDS Node.id; default `nodemesh~<nodeName>`. */
  nodeId?: string;
  /** Extra Node.metadata; NODE_NAME is always set. */
  metadata?: Record<string, JsonValue>;
  /** Reconnect backoff: doubles from initialMs up to maxMs, with jitter. */
  backoff?: { initialMs?: number; maxMs?: number };
  /**
   * How long to wait, once the L4 types have synced, for the first response of nodemesh's own
   * types (EXTENSION_TYPES) before becoming ready without them; default 2000 ms. nodemesh's
   * server answers every subscription at once (an empty response for a type it does not
   * serve), so this only runs out against a control plane that never answers an unknown type.
   */
  extensionWaitMs?: number;
  logger?: Logger;
}

/**
 * nodemesh's extension types. A control plane that predates them, or one that speaks only
 * Istio's API, may leave their subscription unanswered: readiness waits for them only for
 * extensionWaitMs. Until they arrive the proxy has no L7 routes (requests follow the L4
 * service) and no RequestAuthentication (no request has a validated JWT, so no
 * requestPrincipals rule matches).
 */
export const EXTENSION_TYPES: readonly string[] = [TYPE_SERVICE_ROUTES, TYPE_REQUEST_AUTHN];

export interface NackEvent {
  typeUrl: string;
  nonce: string;
  rejected: Rejection[];
}

type Events = {
  connected: [];
  disconnected: [err: Error];
  /** A response of this type was applied (ACKed or NACKed). */
  applied: [typeUrl: string];
  nack: [NackEvent];
  ready: [];
};

type Stream = grpc.ClientDuplexStream<PbDeltaRequest, PbDeltaResponse>;

export class XdsClient extends EventEmitter<Events> {
  readonly ready: Promise<void>;
  readonly #opts: XdsClientOptions;
  readonly #log: Logger;
  readonly #handlers = new Map<string, ResourceHandler>([
    [TYPE_ADDRESS, handleAddresses],
    [TYPE_AUTHORIZATION, handleAuthorizations],
    [TYPE_SERVICE_ROUTES, handleServiceRoutes],
    [TYPE_REQUEST_AUTHN, handleRequestAuthns],
  ]);
  /** Per type: name → each resource we hold (accepted), with its version. */
  readonly #held = new Map<string, Map<string, HeldResource>>();
  /** Per type: name → the latest rejected version of a resource, until a good one or a removal. */
  readonly #rejected = new Map<string, Map<string, HeldRejection>>();
  readonly #synced = new Set<string>();
  #resolveReady!: () => void;
  #isReady = false;
  #client: grpc.Client | undefined;
  #stream: Stream | undefined;
  #timer: NodeJS.Timeout | undefined;
  /** Runs while the L4 types have synced and an extension type has not. */
  #extensionTimer: NodeJS.Timeout | undefined;
  #attempt = 0;
  #stopped = true;
  #connected = false;

  constructor(opts: XdsClientOptions) {
    super();
    this.#opts = opts;
    this.#log = (opts.logger ?? rootLog).child({ component: 'xds' });
    for (const t of this.#handlers.keys()) {
      this.#held.set(t, new Map());
      this.#rejected.set(t, new Map());
    }
    this.ready = new Promise((resolve) => (this.#resolveReady = resolve));
  }

  /**
   * True once every subscribed type has had its first full response applied, or the L4 types
   * have and the extension types did not answer within extensionWaitMs.
   */
  get isReady(): boolean {
    return this.#isReady;
  }

  get connected(): boolean {
    return this.#connected;
  }

  /**
   * The versions this client holds for a type: what a (re)connect resumes from. For a
   * rejected resource that is the version it rejected, so the server resends only a newer
   * one, or removes the name when it no longer has it (which lifts the rejection).
   */
  versions(typeUrl: string): ReadonlyMap<string, string> {
    const out = new Map([...(this.#held.get(typeUrl) ?? new Map<string, HeldResource>()).values()].map((r) => [r.name, r.version]));
    for (const j of this.#rejected.get(typeUrl)?.values() ?? []) out.set(j.name, j.version);
    return out;
  }

  /** What the client holds now, per type: accepted resources and standing rejections. */
  snapshot(): XdsSnapshot {
    const out: XdsSnapshot = {};
    for (const t of this.#handlers.keys()) out[t] = { resources: [...this.#held.get(t)!.values()], rejected: [...this.#rejected.get(t)!.values()] };
    return out;
  }

  /**
   * Loads a snapshot into the state before the first connect, through the same handlers a
   * response goes through, so a stale or tampered snapshot is validated like the wire. The
   * versions restored are what the first request resumes from: the server then sends what
   * changed and removes what it no longer has, in one response per type, so the state never
   * goes through empty. Rejections are replayed as well (they still deny). Types this client
   * does not serve are ignored. Returns what the handlers rejected now.
   */
  restore(snap: XdsSnapshot): { resources: number; rejected: Rejection[] } {
    if (!this.#stopped) throw new XdsError('NM_ERR_XDS_RESOURCE', 'restore() must run before start()');
    let resources = 0;
    const rejected: Rejection[] = [];
    this.#opts.state.update((u) => {
      for (const [typeUrl, handler] of this.#handlers) {
        const t = snap[typeUrl];
        if (!t) continue;
        const now = handler(u, t.resources, []);
        rejected.push(...now);
        const bad = new Set(now.map((r) => r.name));
        for (const r of t.resources) {
          if (bad.has(r.name)) continue;
          this.#held.get(typeUrl)!.set(r.name, r);
          resources++;
        }
        for (const j of t.rejected) {
          // Replayed through the handler, a rejection rejects again; if an upgraded agent
          // accepts it now, it is held like any accepted resource.
          if (!j.resource) u.reject({ kind: KINDS[typeUrl]!, name: j.name, reason: j.reason });
          else if (handler(u, [{ name: j.name, version: j.version, resource: j.resource }], []).length === 0) {
            this.#held.get(typeUrl)!.set(j.name, { name: j.name, version: j.version, resource: j.resource });
            continue;
          }
          this.#rejected.get(typeUrl)!.set(j.name, j);
        }
      }
    });
    return { resources, rejected };
  }

  start(): void {
    if (!this.#stopped) return;
    this.#stopped = false;
    this.#connect();
    // A restart after stop() resumes a wait for the extension types that stop() cut short.
    if (this.#checkReady()) this.emit('ready');
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    clearTimeout(this.#timer);
    this.#timer = undefined;
    clearTimeout(this.#extensionTimer);
    this.#extensionTimer = undefined;
    const s = this.#stream;
    this.#stream = undefined;
    s?.removeAllListeners();
    s?.on('error', () => {});
    s?.cancel();
    this.#client?.close();
    this.#client = undefined;
    this.#connected = false;
  }

  #node() {
    const o = this.#opts;
    return {
      id: o.nodeId ?? `nodemesh~${o.nodeName}`,
      metadata: toStruct({ ...(o.metadata ?? {}), NODE_NAME: o.nodeName }),
      userAgentName: 'nodemesh',
    };
  }

  #connect(): void {
    if (this.#stopped) return;
    this.#client ??= controlPlaneClient(this.#opts);
    const m = adsService.DeltaAggregatedResources;
    const stream: Stream = this.#client.makeBidiStreamRequest(m.path, m.requestSerialize, m.responseDeserialize, authMetadata(this.#opts));
    this.#stream = stream;
    let ended = false;
    const onEnd = (err: Error): void => {
      if (ended || this.#stream !== stream) return;
      ended = true;
      this.#stream = undefined;
      const wasConnected = this.#connected;
      this.#connected = false;
      if (this.#stopped) return;
      const code = (err as grpc.ServiceError).code;
      const level = code === grpc.status.UNAUTHENTICATED ? 'error' : 'warn';
      this.#log[level](
        { err: errorFor(code === grpc.status.UNAUTHENTICATED ? 'NM_ERR_AUTH' : 'NM_ERR_XDS_UNAVAILABLE', err.message), address: this.#opts.address },
        'xDS stream closed; keeping the last good state and reconnecting',
      );
      if (wasConnected) this.emit('disconnected', err);
      this.#scheduleReconnect();
    };
    stream.on('data', (res: PbDeltaResponse) => this.#onResponse(stream, res));
    stream.on('error', onEnd);
    stream.on('end', () => onEnd(new Error('the control plane closed the xDS stream')));
    stream.on('status', (s: grpc.StatusObject) => {
      if (s.code !== grpc.status.OK) onEnd(Object.assign(new Error(s.details), { code: s.code }));
    });
    // Subscribe to every type (wildcard), resuming from what we hold.
    const node = this.#node();
    for (const typeUrl of this.#handlers.keys()) {
      stream.write({
        node,
        typeUrl,
        resourceNamesSubscribe: [],
        initialResourceVersions: Object.fromEntries(this.versions(typeUrl)),
      });
    }
  }

  #scheduleReconnect(): void {
    const initial = this.#opts.backoff?.initialMs ?? 200;
    const max = this.#opts.backoff?.maxMs ?? 15_000;
    const base = Math.min(max, initial * 2 ** this.#attempt);
    this.#attempt++;
    // Jitter spreads the reconnects of many agents after a control plane restart.
    const delay = Math.round(base / 2 + (Math.random() * base) / 2);
    this.#log.debug({ delayMs: delay, attempt: this.#attempt }, 'xDS reconnect scheduled');
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      this.#client?.close();
      this.#client = undefined;
      this.#connect();
    }, delay);
    this.#timer.unref?.();
  }

  #onResponse(stream: Stream, res: PbDeltaResponse): void {
    if (this.#stream !== stream) return;
    if (!this.#connected) {
      this.#connected = true;
      this.#attempt = 0;
      this.emit('connected');
    }
    const handler = this.#handlers.get(res.typeUrl);
    if (!handler) {
      stream.write({ typeUrl: res.typeUrl, responseNonce: res.nonce, errorDetail: { code: grpc.status.INVALID_ARGUMENT, message: `unsupported type ${res.typeUrl}` } });
      return;
    }
    const held = this.#held.get(res.typeUrl)!;
    const standing = this.#rejected.get(res.typeUrl)!;
    const updates: ResourceUpdate[] = [];
    const rejected: Rejection[] = [];
    const bodiless: HeldRejection[] = [];
    for (const r of res.resources) {
      if (!r.name) rejected.push({ name: '(unnamed)', reason: 'resource has no name' });
      else if (!r.resource) bodiless.push({ name: r.name, version: r.version, reason: 'resource has no body' });
      else updates.push({ name: r.name, version: r.version, resource: r.resource });
    }
    this.#opts.state.update((u) => {
      for (const b of bodiless) u.reject({ kind: KINDS[res.typeUrl]!, name: b.name, reason: b.reason });
      rejected.push(...bodiless, ...handler(u, updates, res.removedResources));
    });
    const bad = new Map(rejected.map((r) => [r.name, r.reason]));
    for (const b of bodiless) standing.set(b.name, b);
    for (const r of updates) {
      const reason = bad.get(r.name);
      if (reason === undefined) {
        held.set(r.name, { name: r.name, version: r.version, resource: r.resource });
        standing.delete(r.name);
      } else standing.set(r.name, { name: r.name, version: r.version, reason, resource: r.resource });
    }
    for (const name of res.removedResources) {
      held.delete(name);
      standing.delete(name);
    }
    if (rejected.length > 0) {
      const message = rejected.map((r) => `${r.name}: ${r.reason}`).join('; ');
      this.#log.warn({ err: new XdsError('NM_ERR_XDS_RESOURCE', message), typeUrl: res.typeUrl, nonce: res.nonce }, 'rejected xDS resources (NACK); keeping their last good version');
      stream.write({ typeUrl: res.typeUrl, responseNonce: res.nonce, errorDetail: { code: grpc.status.INVALID_ARGUMENT, message } });
      this.emit('nack', { typeUrl: res.typeUrl, nonce: res.nonce, rejected });
    } else {
      stream.write({ typeUrl: res.typeUrl, responseNonce: res.nonce });
    }
    this.#synced.add(res.typeUrl);
    // isReady already holds while `applied` runs; `ready` follows it.
    const becameReady = this.#checkReady();
    this.emit('applied', res.typeUrl);
    if (becameReady) this.emit('ready');
  }

  /**
   * Marks the client ready (true) when every type has synced; when only the L4 types have,
   * starts the extensionWaitMs timer, which then makes it ready and emits `ready` itself.
   */
  #checkReady(): boolean {
    if (this.#isReady || this.#stopped) return false;
    const types = [...this.#handlers.keys()];
    if (!types.filter((t) => !EXTENSION_TYPES.includes(t)).every((t) => this.#synced.has(t))) return false;
    if (types.every((t) => this.#synced.has(t))) {
      this.#log.info({ address: this.#opts.address }, 'xDS synced: every resource type received');
      this.#markReady();
      return true;
    }
    this.#extensionTimer ??= setTimeout(() => {
      this.#extensionTimer = undefined;
      if (this.#isReady || this.#stopped) return;
      this.#log.warn(
        { address: this.#opts.address, types: types.filter((t) => !this.#synced.has(t)) },
        'xDS synced without the nodemesh L7 types, which the control plane did not answer (an older control plane?): no L7 routes or RequestAuthentication until it sends them',
      );
      this.#markReady();
      this.emit('ready');
    }, this.#opts.extensionWaitMs ?? 2000);
    this.#extensionTimer.unref?.();
    return false;
  }

  #markReady(): void {
    clearTimeout(this.#extensionTimer);
    this.#extensionTimer = undefined;
    this.#isReady = true;
    this.#resolveReady();
  }
}
