// The node agent's delta ADS client: subscribes to workloads/services and authorizations,
// validates each resource with one typed handler per type, ACKs or NACKs, and keeps the last
// good state across NACKs and disconnections; reconnects with backoff and resumes from the
// versions it holds (initial_resource_versions).
import { EventEmitter } from 'node:events';
import * as grpc from '@grpc/grpc-js';
import { errorFor, isNodemeshError, XdsError } from '../errors.js';
import { log as rootLog, type Logger } from '../log.js';
import { addressFromProto, authorizationFromProto } from './convert.js';
import { authMetadata, controlPlaneClient, type ControlPlaneConnection } from './credentials.js';
import {
  adsService,
  codecs,
  toStruct,
  TYPE_ADDRESS,
  TYPE_AUTHORIZATION,
  type JsonValue,
  type PbAny,
  type PbDeltaRequest,
  type PbDeltaResponse,
} from './proto.js';
import type { ProxyState, ProxyStateUpdater } from '../state/index.js';

export interface ResourceUpdate {
  name: string;
  version: string;
  resource: PbAny;
}

export interface Rejection {
  name: string;
  reason: string;
}

/** One typed handler per resource type: applies what is valid, returns what it rejects. */
export type ResourceHandler = (u: ProxyStateUpdater, updates: ResourceUpdate[], removed: string[]) => Rejection[];

function decodeAny<T>(r: ResourceUpdate, typeUrl: string, decode: (b: Uint8Array) => T): T {
  if (r.resource.type_url !== typeUrl) throw new XdsError('NM_ERR_XDS_RESOURCE', `type_url ${JSON.stringify(r.resource.type_url)} is not ${typeUrl}`);
  try {
    return decode(r.resource.value);
  } catch (e) {
    throw new XdsError('NM_ERR_XDS_RESOURCE', `cannot decode: ${(e as Error).message}`);
  }
}

/** A rejection reason; an unexpected error rejects the resource instead of killing the agent. */
function reasonOf(e: unknown): string {
  return isNodemeshError(e, 'NM_ERR_XDS_RESOURCE') ? e.message : `internal error while applying it: ${(e as Error).message}`;
}

/** istio.workload.Address: workloads (by uid) and services (by `ns/hostname`). */
export const handleAddresses: ResourceHandler = (u, updates, removed) => {
  const rejected: Rejection[] = [];
  for (const r of updates) {
    try {
      u.insertAddress(r.name, addressFromProto(decodeAny(r, TYPE_ADDRESS, codecs.address.decode), r.name));
    } catch (e) {
      rejected.push({ name: r.name, reason: reasonOf(e) });
    }
  }
  for (const name of removed) u.removeAddress(name);
  return rejected;
};

/** istio.security.Authorization, by `ns/name`. */
export const handleAuthorizations: ResourceHandler = (u, updates, removed) => {
  const rejected: Rejection[] = [];
  for (const r of updates) {
    try {
      u.insertAuthorization(authorizationFromProto(decodeAny(r, TYPE_AUTHORIZATION, codecs.authorization.decode), r.name));
    } catch (e) {
      rejected.push({ name: r.name, reason: reasonOf(e) });
    }
  }
  for (const name of removed) u.removeAuthorization(name);
  return rejected;
};

export interface XdsClientOptions extends ControlPlaneConnection {
  state: ProxyState;
  /** xDS Node.id; default `nodemesh~<nodeName>`. */
  nodeId?: string;
  /** Extra Node.metadata; NODE_NAME is always set. */
  metadata?: Record<string, JsonValue>;
  /** Reconnect backoff: doubles from initialMs up to maxMs, with jitter. */
  backoff?: { initialMs?: number; maxMs?: number };
  logger?: Logger;
}

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
  ]);
  /** Per type: name → version of each resource we hold (accepted). */
  readonly #versions = new Map<string, Map<string, string>>();
  readonly #synced = new Set<string>();
  #resolveReady!: () => void;
  #isReady = false;
  #client: grpc.Client | undefined;
  #stream: Stream | undefined;
  #timer: NodeJS.Timeout | undefined;
  #attempt = 0;
  #stopped = true;
  #connected = false;

  constructor(opts: XdsClientOptions) {
    super();
    this.#opts = opts;
    this.#log = (opts.logger ?? rootLog).child({ component: 'xds' });
    for (const t of this.#handlers.keys()) this.#versions.set(t, new Map());
    this.ready = new Promise((resolve) => (this.#resolveReady = resolve));
  }

  /** True once every subscribed type has had its first full response applied. */
  get isReady(): boolean {
    return this.#isReady;
  }

  get connected(): boolean {
    return this.#connected;
  }

  /** The versions this client holds for a type (what it would resume from). */
  versions(typeUrl: string): ReadonlyMap<string, string> {
    return this.#versions.get(typeUrl) ?? new Map();
  }

  start(): void {
    if (!this.#stopped) return;
    this.#stopped = false;
    this.#connect();
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    clearTimeout(this.#timer);
    this.#timer = undefined;
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
        initialResourceVersions: Object.fromEntries(this.#versions.get(typeUrl)!),
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
    const versions = this.#versions.get(res.typeUrl)!;
    const updates: ResourceUpdate[] = [];
    const rejected: Rejection[] = [];
    for (const r of res.resources) {
      if (!r.name) rejected.push({ name: '(unnamed)', reason: 'resource has no name' });
      else if (!r.resource) rejected.push({ name: r.name, reason: 'resource has no body' });
      else updates.push({ name: r.name, version: r.version, resource: r.resource });
    }
    this.#opts.state.update((u) => {
      rejected.push(...handler(u, updates, res.removedResources));
    });
    const bad = new Set(rejected.map((r) => r.name));
    for (const r of updates) if (!bad.has(r.name)) versions.set(r.name, r.version);
    for (const name of res.removedResources) versions.delete(name);
    if (rejected.length > 0) {
      const message = rejected.map((r) => `${r.name}: ${r.reason}`).join('; ');
      this.#log.warn({ err: new XdsError('NM_ERR_XDS_RESOURCE', message), typeUrl: res.typeUrl, nonce: res.nonce }, 'rejected xDS resources (NACK); keeping their last good version');
      stream.write({ typeUrl: res.typeUrl, responseNonce: res.nonce, errorDetail: { code: grpc.status.INVALID_ARGUMENT, message } });
      this.emit('nack', { typeUrl: res.typeUrl, nonce: res.nonce, rejected });
    } else {
      stream.write({ typeUrl: res.typeUrl, responseNonce: res.nonce });
    }
    let becameReady = false;
    if (!this.#synced.has(res.typeUrl)) {
      this.#synced.add(res.typeUrl);
      if (!this.#isReady && [...this.#handlers.keys()].every((t) => this.#synced.has(t))) {
        this.#isReady = true;
        becameReady = true;
        this.#log.info({ address: this.#opts.address }, 'xDS synced: every resource type received');
        this.#resolveReady();
      }
    }
    this.emit('applied', res.typeUrl);
    if (becameReady) this.emit('ready');
  }
}
