// ?watch=true as kube-apiserver streams it: chunked JSON lines of ADDED/MODIFIED/DELETED from a
// resourceVersion (replaying history), BOOKMARKs, a 410 ERROR event when that version is
// compacted, timeoutSeconds, and selectors applied per event (leaving the selector is DELETED).
import type { ServerResponse } from 'node:http';
import type { Cluster } from './cluster.js';
import type { KubeObject } from './errors.js';
import { expired } from './errors.js';
import { apiVersionOf, resourceKey, type ResourceKind } from './resources.js';
import type { Matcher } from './selectors.js';
import type { StoreEvent } from './store.js';

export interface WatchParams {
  r: ResourceKind;
  version: string;
  match: Matcher;
  resourceVersion?: string;
  allowWatchBookmarks: boolean;
  sendInitialEvents: boolean;
  timeoutSeconds?: number;
  bookmarkEveryMs: number;
}

type Line = { type: 'ADDED' | 'MODIFIED' | 'DELETED' | 'BOOKMARK' | 'ERROR'; object: unknown };

/** What one watcher sees of a store event, given its selector (cacher's convertToWatchEvent). */
function convert(e: StoreEvent, match: Matcher): { type: Line['type']; obj: KubeObject } | undefined {
  const cur = e.type !== 'DELETED' && match(e.obj);
  const was = e.type === 'ADDED' ? false : match(e.prev ?? e.obj);
  if (e.type === 'DELETED') return was ? { type: 'DELETED', obj: e.obj } : undefined;
  if (cur && was) return { type: 'MODIFIED', obj: e.obj };
  if (cur) return { type: 'ADDED', obj: e.obj };
  // Left the selector: a DELETED carrying the previous content at the new resourceVersion.
  if (was) return { type: 'DELETED', obj: { ...e.prev!, metadata: { ...e.prev!.metadata, resourceVersion: String(e.rv) } } };
  return undefined;
}

/** Open watches, so stop() and a CRD's removal can end them. */
export class WatchSet {
  readonly #open = new Map<ServerResponse, ResourceKind>();
  add(res: ServerResponse, r: ResourceKind): void { this.#open.set(res, r); }
  remove(res: ServerResponse): void { this.#open.delete(res); }
  get size(): number { return this.#open.size; }
  /** Ends watches cleanly (a finished chunked response), as a server-side timeout does. */
  end(filter: (r: ResourceKind) => boolean = () => true): void {
    for (const [res, r] of this.#open) if (filter(r)) res.end();
  }
  /** Cuts every watch's connection, as a crashing API server does. */
  destroyAll(): void {
    for (const res of this.#open.keys()) res.socket?.destroy();
    this.#open.clear();
  }
}

/** Streams one watch until the client goes, the timeout passes or the server stops. */
export function serveWatch(cluster: Cluster, res: ServerResponse, p: WatchParams, open: WatchSet): void {
  const key = resourceKey(p.r);
  const render = (o: KubeObject): KubeObject => cluster.render(o, p.version, p.r);
  const send = (l: Line): void => { if (!res.writableEnded && !res.destroyed) res.write(JSON.stringify(l) + '\n'); };
  // A client gone mid-write is the watch's end, not an error of the server.
  res.on('error', () => res.destroy());
  res.writeHead(200, { 'Content-Type': 'application/json', 'Cache-Control': 'no-cache, private', 'Transfer-Encoding': 'chunked' });
  res.flushHeaders();

  const rvParam = p.resourceVersion ?? '';
  const bookmark = (annotations?: Record<string, string>): Line => ({
    type: 'BOOKMARK',
    object: { kind: p.r.kind, apiVersion: apiVersionOf(p.r.group, p.version), metadata: { resourceVersion: String(cluster.store.rv), ...(annotations ? { annotations } : {}) } },
  });
  if (rvParam === '' || rvParam === '0' || p.sendInitialEvents) {
    // No resourceVersion (or "0"): the current state as synthetic ADDED events, then changes.
    for (const [, o] of cluster.store.all(key)) if (p.match(o)) send({ type: 'ADDED', object: render(o) });
    if (p.sendInitialEvents && p.allowWatchBookmarks) send(bookmark({ 'k8s.io/initial-events-end': 'true' }));
  } else {
    const from = Number(rvParam);
    const replay = Number.isFinite(from) ? cluster.store.since(key, from) : undefined;
    if (!replay) {
      // As the real server: a 200 whose only event is an ERROR carrying a 410 Expired Status, then
      // the end of the stream. client-node's ListWatch clears its resourceVersion on an ERROR whose
      // object has code 410 and relists when the stream ends (cache.js watchHandler/doneHandler).
      send({ type: 'ERROR', object: expired(`too old resource version: ${rvParam} (${cluster.store.compactedRv})`).status });
      res.end();
      return;
    }
    for (const e of replay) {
      const c = convert(e, p.match);
      if (c) send({ type: c.type, object: render(c.obj) });
    }
  }

  open.add(res, p.r);
  const unsubscribe = cluster.store.subscribe((e) => {
    if (e.resource !== key) return;
    const c = convert(e, p.match);
    if (c) send({ type: c.type, object: render(c.obj) });
  });
  const timers: NodeJS.Timeout[] = [];
  if (p.allowWatchBookmarks) timers.push(setInterval(() => send(bookmark()), p.bookmarkEveryMs));
  if (p.timeoutSeconds !== undefined && p.timeoutSeconds > 0) timers.push(setTimeout(() => res.end(), p.timeoutSeconds * 1000));
  const done = (): void => {
    unsubscribe();
    for (const t of timers) clearTimeout(t);
    open.remove(res);
  };
  res.on('close', done);
  res.on('finish', done);
}
