// Reads a directory of Kubernetes YAML into typed resources, with file and line for every
// error. Used by the simulator, the agent's local mode and the control plane.
import { createHash } from 'node:crypto';
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { LineCounter, parseAllDocuments } from 'yaml';
import { ConfigError, errorFor } from '../errors.js';
import { isIPv4 } from '../net/index.js';
import { fieldError, fieldPathOf, formatPath, isRecord, list, map, port, str, strList, strMap, type FieldPath } from './fields.js';
import {
  DATAPLANE_MODE_AMBIENT,
  DATAPLANE_MODE_LABEL,
  type ContainerSpec,
  type K8sObject,
  type Namespace,
  type ObjectMeta,
  type Pod,
  type Service,
  type ServiceAccount,
  type ServicePort,
  type SourcePos,
} from './types.js';

export interface LoadedConfig {
  dir: string;
  objects: K8sObject[];
  pods: Pod[];
  services: Service[];
  namespaces: Namespace[];
  serviceAccounts: ServiceAccount[];
}

export interface LoadError {
  code: 'NM_ERR_CONFIG_YAML' | 'NM_ERR_CONFIG_INVALID' | 'NM_ERR_CONFIG_CONFLICT';
  file: string;
  line: number;
  message: string;
}

export interface LoadResult {
  config: LoadedConfig;
  /** Problems found; the resources they concern are left out of `config`. */
  errors: LoadError[];
}

const YAML_EXT = /\.(ya?ml|json)$/i;

/** Lists the config files of a directory, recursively, in a stable order. */
export function listConfigFiles(dir: string): string[] {
  let st;
  try {
    st = statSync(dir);
  } catch (cause) {
    throw new ConfigError('NM_ERR_CONFIG_INVALID', `config directory does not exist`, { where: dir, cause });
  }
  if (!st.isDirectory()) throw new ConfigError('NM_ERR_CONFIG_INVALID', `not a directory`, { where: dir });
  const out: string[] = [];
  const walk = (d: string): void => {
    for (const ent of readdirSync(d, { withFileTypes: true }).sort((a, b) => a.name.localeCompare(b.name))) {
      if (ent.name.startsWith('.')) continue;
      const p = join(d, ent.name);
      if (ent.isDirectory()) walk(p);
      else if (ent.isFile() && YAML_EXT.test(ent.name)) out.push(p);
    }
  };
  walk(dir);
  return out;
}

/** A stable UID for a resource that names none, derived from kind/namespace/name. */
export function deriveUid(kind: string, namespace: string, name: string): string {
  const h = createHash('sha1').update(`nodemesh/${kind}/${namespace}/${name}`).digest('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-5${h.slice(13, 16)}-a${h.slice(17, 20)}-${h.slice(20, 32)}`;
}

function meta(raw: Record<string, unknown>, kind: string, clusterScoped: boolean): ObjectMeta {
  const m = map(raw.metadata, ['metadata'], true)!;
  const name = str(m.name, ['metadata', 'name'], true)!;
  if (!/^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/.test(name) || name.length > 253) {
    throw fieldError(`metadata.name ${JSON.stringify(name)} is not a valid Kubernetes name`, ['metadata', 'name']);
  }
  const namespace = clusterScoped ? '' : (str(m.namespace, ['metadata', 'namespace']) ?? 'default');
  return {
    name,
    namespace,
    uid: str(m.uid, ['metadata', 'uid']) ?? deriveUid(kind, namespace, name),
    labels: strMap(m.labels, ['metadata', 'labels']),
    annotations: strMap(m.annotations, ['metadata', 'annotations']),
  };
}

function container(v: unknown, i: number, simulated: boolean): ContainerSpec {
  const path: FieldPath = ['spec', 'containers', i];
  const c = map(v, path, true)!;
  const command = strList(c.command, [...path, 'command']);
  if (command.length === 0 && simulated) {
    throw fieldError(`${formatPath([...path, 'command'])} is required: the simulator runs it as the pod's process (the image field is ignored)`, [...path, 'command']);
  }
  const env: Record<string, string> = {};
  list(c.env, [...path, 'env']).forEach((e, j) => {
    const ep: FieldPath = [...path, 'env', j];
    const em = map(e, ep, true)!;
    env[str(em.name, [...ep, 'name'], true)!] = str(em.value, [...ep, 'value']) ?? '';
  });
  return {
    name: str(c.name, [...path, 'name']) ?? `c${i}`,
    command,
    args: strList(c.args, [...path, 'args']),
    env,
    ports: list(c.ports, [...path, 'ports']).map((v, j) => {
      const pp: FieldPath = [...path, 'ports', j];
      const p = map(v, pp, true)!;
      const name = str(p.name, [...pp, 'name']);
      return {
        containerPort: port(p.containerPort, [...pp, 'containerPort'], true)!,
        ...(name === undefined ? {} : { name }),
        protocol: str(p.protocol, [...pp, 'protocol']) ?? 'TCP',
      };
    }),
  };
}

function toPod(base: K8sObject, simulated: boolean): Pod {
  const spec = map(base.raw.spec, ['spec'], true)!;
  const containers = list(spec.containers, ['spec', 'containers']).map((c, i) => container(c, i, simulated));
  if (containers.length === 0) throw fieldError('spec.containers must list at least one container', ['spec', 'containers']);
  const status = isRecord(base.raw.status) ? base.raw.status : {};
  const requestedIp = str(status.podIP, ['status', 'podIP']);
  if (requestedIp !== undefined && !isIPv4(requestedIp)) throw fieldError(`status.podIP ${JSON.stringify(requestedIp)} is not an IPv4 address`, ['status', 'podIP']);
  const nodeName = str(spec.nodeName, ['spec', 'nodeName']);
  return {
    ...base,
    kind: 'Pod',
    spec: {
      ...(nodeName === undefined ? {} : { nodeName }),
      serviceAccountName: str(spec.serviceAccountName, ['spec', 'serviceAccountName']) ?? 'default',
      containers,
    },
    ...(requestedIp === undefined ? {} : { requestedIp }),
  };
}

function toService(base: K8sObject): Service {
  const spec = map(base.raw.spec, ['spec'], true)!;
  const clusterIP = str(spec.clusterIP, ['spec', 'clusterIP']);
  if (clusterIP !== undefined && clusterIP !== 'None' && !isIPv4(clusterIP)) {
    throw fieldError(`spec.clusterIP ${JSON.stringify(clusterIP)} is not an IPv4 address`, ['spec', 'clusterIP']);
  }
  const ports: ServicePort[] = list(spec.ports, ['spec', 'ports']).map((v, j) => {
    const path: FieldPath = ['spec', 'ports', j];
    const p = map(v, path, true)!;
    const sp = port(p.port, [...path, 'port'], true)!;
    let tp: number | string = sp;
    if (typeof p.targetPort === 'string') tp = p.targetPort;
    else if (p.targetPort !== undefined) tp = port(p.targetPort, [...path, 'targetPort'], true)!;
    const name = str(p.name, [...path, 'name']);
    const appProtocol = str(p.appProtocol, [...path, 'appProtocol']);
    return {
      ...(name === undefined ? {} : { name }),
      port: sp,
      targetPort: tp,
      protocol: str(p.protocol, [...path, 'protocol']) ?? 'TCP',
      ...(appProtocol === undefined ? {} : { appProtocol }),
    };
  });
  return {
    ...base,
    kind: 'Service',
    spec: {
      ...(clusterIP === undefined ? {} : { clusterIP }),
      selector: strMap(spec.selector, ['spec', 'selector']),
      ports,
    },
  };
}

const CLUSTER_SCOPED = new Set(['Namespace', 'ClusterRole', 'ClusterRoleBinding', 'Node']);

/**
 * One resource from its decoded form (a YAML document, or an object from the Kubernetes API).
 * Throws a field error (fieldPathOf) for bad content. `simulated: false` is for pods the
 * simulator will not run (from the API): their containers need no command.
 */
export function objectFromRaw(raw: unknown, pos: SourcePos, opts: { simulated?: boolean } = {}): K8sObject {
  if (!isRecord(raw)) throw fieldError('a resource must be a map with apiVersion, kind and metadata', []);
  const kind = str(raw.kind, ['kind'], true)!;
  const apiVersion = str(raw.apiVersion, ['apiVersion'], true)!;
  if (kind === 'List') throw fieldError('kind List is not supported; write one resource per YAML document', ['kind']);
  const base: K8sObject = { apiVersion, kind, metadata: meta(raw, kind, CLUSTER_SCOPED.has(kind)), raw, source: pos };
  return kind === 'Pod' ? toPod(base, opts.simulated ?? true) : kind === 'Service' ? toService(base) : base;
}

/** Parses one file's text. Exported for tests and for the control plane's watcher. */
/** Whether a value parsed from YAML contains itself (a recursive alias such as `&a [*a]`). */
export function isCyclic(v: unknown, path: Set<object> = new Set()): boolean {
  if (typeof v !== 'object' || v === null) return false;
  if (path.has(v)) return true;
  path.add(v);
  const found = (Array.isArray(v) ? v : Object.values(v)).some((c) => isCyclic(c, path));
  path.delete(v);
  return found;
}

export function parseConfigText(text: string, file: string): { objects: K8sObject[]; errors: LoadError[] } {
  const lc = new LineCounter();
  const docs = parseAllDocuments(text, { lineCounter: lc, prettyErrors: false });
  const objects: K8sObject[] = [];
  const errors: LoadError[] = [];
  const docs_ = Array.isArray(docs) ? docs : [docs];
  for (const doc of docs_) {
    const startOffset = doc.range?.[0] ?? 0;
    if (doc.errors.length > 0) {
      // The first error is the cause; the parser's follow-on errors only repeat it.
      const e = doc.errors[0]!;
      errors.push({ code: 'NM_ERR_CONFIG_YAML', file, line: lc.linePos(e.pos[0]).line, message: e.message.split('\n')[0] ?? e.message });
      continue;
    }
    let raw: unknown;
    try {
      // An unresolved alias or an alias bomb (more than yaml's maxAliasCount expansions)
      // throws here, after a clean parse: it is the document's YAML that is wrong.
      raw = doc.toJS();
      if (isCyclic(raw)) throw new Error('a YAML alias refers to a node that contains it (a cycle); Kubernetes resources are trees');
    } catch (e) {
      errors.push({ code: 'NM_ERR_CONFIG_YAML', file, line: lc.linePos(startOffset).line, message: (e as Error).message.split('\n')[0] ?? String(e) });
      continue;
    }
    if (raw === null || raw === undefined) continue; // empty document
    // Line of the first key, not the leading comments/`---`.
    const contentsOffset = (doc.contents as { range?: [number, number, number] } | null)?.range?.[0] ?? startOffset;
    const pos: SourcePos = { file, line: lc.linePos(contentsOffset).line };
    try {
      objects.push(objectFromRaw(raw, pos));
    } catch (e) {
      if (!fieldPathOf(e)) throw e;
      errors.push({ code: 'NM_ERR_CONFIG_INVALID', file, line: pos.line, message: (e as Error).message });
    }
  }
  return { objects, errors };
}

/** Loads a whole directory; never throws for bad content, only for a missing directory. */
export function loadConfigDir(dir: string): LoadResult {
  const objects: K8sObject[] = [];
  const errors: LoadError[] = [];
  for (const path of listConfigFiles(dir)) {
    const file = relative(process.cwd(), path) || path;
    const r = parseConfigText(readFileSync(path, 'utf8'), file);
    objects.push(...r.objects);
    errors.push(...r.errors);
  }
  // Duplicate identities: keep the first, report the rest.
  const seen = new Map<string, K8sObject>();
  const kept: K8sObject[] = [];
  for (const o of objects) {
    const key = `${o.kind}/${o.metadata.namespace}/${o.metadata.name}`;
    const prev = seen.get(key);
    if (prev) {
      errors.push({
        code: 'NM_ERR_CONFIG_CONFLICT',
        file: o.source.file,
        line: o.source.line,
        message: `${o.kind} ${o.metadata.namespace ? o.metadata.namespace + '/' : ''}${o.metadata.name} is already defined at ${prev.source.file}:${prev.source.line}`,
      });
      continue;
    }
    seen.set(key, o);
    kept.push(o);
  }
  return {
    config: {
      dir,
      objects: kept,
      pods: kept.filter((o): o is Pod => o.kind === 'Pod'),
      services: kept.filter((o): o is Service => o.kind === 'Service'),
      namespaces: kept.filter((o): o is Namespace => o.kind === 'Namespace'),
      serviceAccounts: kept.filter((o): o is ServiceAccount => o.kind === 'ServiceAccount'),
    },
    errors,
  };
}

/** Formats load errors the way every command prints them: `file:line: message`. */
export function formatLoadErrors(errors: LoadError[]): string {
  return errors.map((e) => `${e.file}:${e.line}: ${e.message}`).join('\n');
}

/** Loads a directory and throws one NodemeshError listing every problem. */
export function loadConfigDirStrict(dir: string): LoadedConfig {
  const r = loadConfigDir(dir);
  if (r.errors.length > 0) {
    const first = r.errors[0]!;
    throw errorFor(first.code, `${r.errors.length} problem(s) in ${dir}:\n${formatLoadErrors(r.errors)}`, {
      errors: r.errors,
    });
  }
  return r.config;
}

/** Whether a pod is enrolled in the mesh: its own label, else its namespace's label. */
export function isAmbient(pod: Pod, namespaces: Namespace[]): boolean {
  const own = pod.metadata.labels[DATAPLANE_MODE_LABEL];
  if (own !== undefined) return own === DATAPLANE_MODE_AMBIENT;
  const ns = namespaces.find((n) => n.metadata.name === pod.metadata.namespace);
  return ns?.metadata.labels[DATAPLANE_MODE_LABEL] === DATAPLANE_MODE_AMBIENT;
}
