// The control plane's config source: a directory of Kubernetes YAML, watched for changes.
// Each file keeps its last good resources, so a bad edit never withdraws what was served.
import { createHash } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { readFileSync, statSync, watch, type FSWatcher } from 'node:fs';
import { relative } from 'node:path';
import { listConfigFiles, type K8sObject, type Namespace, type Pod, type Service, type ServiceAccount } from '../k8s/index.js';
import { log as rootLog, type Logger } from '../log.js';
import type { AuthorizationPolicy, HttpRoute, PeerAuthentication } from './resources.js';
import type { DestinationRule, VirtualService } from './resources-istio-net.js';
import { describe, identityOf, parseConfigFile, type ConfigObject, type ConfigProblem } from './validate.js';

export interface ConfigSnapshot {
  namespaces: Namespace[];
  pods: Pod[];
  services: Service[];
  serviceAccounts: ServiceAccount[];
  authorizationPolicies: AuthorizationPolicy[];
  peerAuthentications: PeerAuthentication[];
  httpRoutes: HttpRoute[];
  /** discovery.k8s.io EndpointSlices: their endpoints without a Pod targetRef become workloads. */
  endpointSlices: K8sObject[];
  /** Held as read, not yet enforced (JWT is L7): security.istio.io RequestAuthentication. */
  requestAuthentications: K8sObject[];
  /** networking.istio.io VirtualService and DestinationRule, validated; routes.ts compiles them. */
  virtualServices: VirtualService[];
  destinationRules: DestinationRule[];
  /** Every problem of every file, in file order; warnings included. */
  problems: ConfigProblem[];
}

interface FileState {
  hash: string;
  mtimeMs: number;
  size: number;
  /** The file's name as problems give it. */
  file: string;
  /** The valid resources of the file's current text. */
  parsed: ConfigObject[];
  /** Whether the current text has errors of its own (a conflict with another file is found later). */
  hasErrors: boolean;
  /** The resources served from this file: the last good version of each. */
  good: ConfigObject[];
  problems: ConfigProblem[];
  /** What was last logged as kept, so each change is logged once. */
  keptLogged?: string;
}

/** Builds a snapshot from objects (in file order) and problems; reports duplicates. */
export function buildSnapshot(objects: ConfigObject[], problems: ConfigProblem[]): ConfigSnapshot {
  const seen = new Map<string, ConfigObject>();
  const kept: ConfigObject[] = [];
  const out = [...problems];
  for (const o of objects) {
    const key = identityOf(o);
    const prev = seen.get(key);
    if (prev) {
      out.push({
        code: 'NM_ERR_CONFIG_CONFLICT',
        severity: 'error',
        file: o.source.file,
        line: o.source.line,
        message: `${describe(o)} is already defined at ${prev.source.file}:${prev.source.line}`,
        resource: describe(o),
      });
      continue;
    }
    seen.set(key, o);
    kept.push(o);
  }
  const byKind = <T extends ConfigObject>(k: string) => kept.filter((o): o is T => o.kind === k);
  return {
    namespaces: byKind<Namespace>('Namespace'),
    pods: byKind<Pod>('Pod'),
    services: byKind<Service>('Service'),
    serviceAccounts: byKind<ServiceAccount>('ServiceAccount'),
    authorizationPolicies: byKind<AuthorizationPolicy>('AuthorizationPolicy'),
    peerAuthentications: byKind<PeerAuthentication>('PeerAuthentication'),
    httpRoutes: byKind<HttpRoute>('HTTPRoute'),
    endpointSlices: byKind<K8sObject>('EndpointSlice'),
    requestAuthentications: byKind<K8sObject>('RequestAuthentication'),
    virtualServices: byKind<VirtualService>('VirtualService'),
    destinationRules: byKind<DestinationRule>('DestinationRule'),
    problems: out,
  };
}

/** Loads a directory once (no last-good history): what `--check` validates. */
export function loadSnapshot(dir: string): ConfigSnapshot {
  const objects: ConfigObject[] = [];
  const problems: ConfigProblem[] = [];
  for (const path of listConfigFiles(dir)) {
    const r = parseConfigFile(readFileSync(path, 'utf8'), relative(process.cwd(), path) || path);
    objects.push(...r.objects);
    problems.push(...r.problems);
  }
  return buildSnapshot(objects, problems);
}

export interface ConfigSourceOptions {
  /** Quiet period after a file event before rescanning (default 100 ms). */
  debounceMs?: number;
  /** Periodic rescan, for file systems where fs.watch misses events (default 2000 ms; 0 = off). */
  rescanMs?: number;
  logger?: Logger;
}

export class ConfigSource extends EventEmitter<{ change: [ConfigSnapshot] }> {
  readonly dir: string;
  readonly #opts: ConfigSourceOptions;
  readonly #log: Logger;
  readonly #files = new Map<string, FileState>();
  #snapshot: ConfigSnapshot = buildSnapshot([], []);
  #watcher: FSWatcher | undefined;
  #debounce: NodeJS.Timeout | undefined;
  #interval: NodeJS.Timeout | undefined;
  #reported = new Set<string>();

  constructor(dir: string, opts: ConfigSourceOptions = {}) {
    super();
    this.dir = dir;
    this.#opts = opts;
    this.#log = (opts.logger ?? rootLog).child({ component: 'config', dir });
  }

  snapshot(): ConfigSnapshot {
    return this.#snapshot;
  }

  /** Reads the directory; returns whether anything changed (and emits `change` if so). */
  rescan(force = false): boolean {
    let paths: string[];
    try {
      paths = listConfigFiles(this.dir);
    } catch (err) {
      // The directory vanished (e.g. being replaced): keep serving what we have.
      this.#log.warn({ err }, 'cannot list the config directory; keeping the last good config');
      return false;
    }
    let changed = false;
    const present = new Set<string>();
    for (const path of paths) {
      present.add(path);
      let st;
      try {
        st = statSync(path);
      } catch {
        continue; // removed between listing and stat
      }
      const prev = this.#files.get(path);
      if (!force && prev && prev.mtimeMs === st.mtimeMs && prev.size === st.size) continue;
      let text: string;
      try {
        text = readFileSync(path, 'utf8');
      } catch {
        continue;
      }
      const hash = createHash('sha256').update(text).digest('hex');
      if (prev && prev.hash === hash) {
        prev.mtimeMs = st.mtimeMs;
        prev.size = st.size;
        continue;
      }
      this.#files.set(path, this.#parse(path, text, hash, st.mtimeMs, st.size, prev));
      changed = true;
    }
    for (const path of [...this.#files.keys()]) {
      if (!present.has(path)) {
        // Deleting a file is deliberate: its resources go.
        this.#files.delete(path);
        changed = true;
      }
    }
    if (changed) {
      this.#snapshot = this.#serve();
      this.#logProblems(this.#snapshot.problems);
      this.emit('change', this.#snapshot);
    }
    return changed;
  }

  /** Starts watching: fs.watch with a debounce, plus a periodic rescan as a fallback. */
  start(): void {
    if (this.#watcher || this.#interval) return;
    try {
      this.#watcher = watch(this.dir, { recursive: true }, () => this.#schedule());
      this.#watcher.on('error', (err) => {
        this.#log.warn({ err }, 'watching the config directory failed; relying on the periodic rescan');
        this.#watcher?.close();
        this.#watcher = undefined;
      });
    } catch (err) {
      this.#log.warn({ err }, 'cannot watch the config directory; relying on the periodic rescan');
    }
    const every = this.#opts.rescanMs ?? 2000;
    if (every > 0) {
      this.#interval = setInterval(() => this.rescan(), every);
      this.#interval.unref();
    }
  }

  stop(): void {
    this.#watcher?.close();
    this.#watcher = undefined;
    clearTimeout(this.#debounce);
    clearInterval(this.#interval);
    this.#interval = undefined;
  }

  #schedule(): void {
    clearTimeout(this.#debounce);
    // Editors write a file in several steps (truncate, write, rename): wait for quiet.
    this.#debounce = setTimeout(() => {
      this.#debounce = undefined;
      this.rescan();
    }, this.#opts.debounceMs ?? 100);
    this.#debounce.unref();
  }

  #parse(path: string, text: string, hash: string, mtimeMs: number, size: number, prev: FileState | undefined): FileState {
    const file = relative(process.cwd(), path) || path;
    const r = parseConfigFile(text, file);
    const hasErrors = r.problems.some((p) => p.severity === 'error');
    return { hash, mtimeMs, size, file, parsed: r.objects, hasErrors, good: prev?.good ?? r.objects, problems: r.problems };
  }

  /**
   * What every file serves, derived from what each file's text holds and what it served before.
   * A file with errors serves its valid resources and, for everything else it served before (a
   * resource now invalid, renamed, or lost in a YAML syntax error), the last good version. A
   * resource also defined by another file, or twice in one file, is such an error: a conflict
   * never withdraws the rest of what the file served.
   */
  #serve(): ConfigSnapshot {
    const paths = [...this.#files.keys()].sort();
    const states = paths.map((p) => this.#files.get(p)!);
    const problems = states.flatMap((f) => f.problems);
    const conflicted = new Set(
      buildSnapshot(states.flatMap((f) => f.parsed), []).problems.filter((p) => p.code === 'NM_ERR_CONFIG_CONFLICT').map((p) => p.file),
    );
    for (const f of states) {
      if (!f.hasErrors && !conflicted.has(f.file)) {
        f.good = f.parsed;
        f.keptLogged = undefined;
        continue;
      }
      const now = new Set(f.parsed.map(identityOf));
      const kept = f.good.filter((o) => !now.has(identityOf(o))).map((o) => (o.source.kept ? o : { ...o, source: { ...o.source, kept: true } }));
      const names = kept.map(describe);
      if (kept.length > 0 && names.join('\n') !== f.keptLogged) {
        this.#log.warn({ file: f.file, kept: names }, 'config file has errors; keeping the last good version of its other resources');
      }
      f.keptLogged = names.join('\n');
      f.good = [...f.parsed, ...kept];
    }
    const snap = buildSnapshot(states.flatMap((f) => f.good), problems);
    // What lost a conflict was never served: it is no file's last good version.
    const served = new Set<ConfigObject>(Object.values(snap).flat() as ConfigObject[]);
    for (const f of states) f.good = f.good.filter((o) => served.has(o));
    return snap;
  }

  #logProblems(problems: ConfigProblem[]): void {
    const next = new Set<string>();
    for (const p of problems) {
      const key = `${p.code}|${p.file}|${p.line}|${p.message}`;
      next.add(key);
      if (this.#reported.has(key)) continue;
      const fields = { code: p.code, file: p.file, line: p.line, ...(p.resource ? { resource: p.resource } : {}) };
      if (p.severity === 'warning') this.#log.warn(fields, `${p.file}:${p.line}: ${p.message}`);
      else this.#log.error(fields, `${p.file}:${p.line}: ${p.message}`);
    }
    this.#reported = next;
  }
}
