// Renders a Helm chart directory as `helm template` does: Chart.yaml and values.yaml (merged
// with overrides), every templates/*.yaml through the Go-template interpreter with the
// templates/_*.tpl defines, documents in helm's install order, and crds/ passed through as is.
import { readdirSync, readFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { parse, parseAllDocuments } from 'yaml';
import { ConfigError } from '../errors.js';
import { chartFuncs } from './funcs.js';
import { parseTemplate, Renderer } from './template.js';

/** helm's InstallOrder (pkg/releaseutil/kind_sorter.go), the kinds this chart can emit among them. */
const INSTALL_ORDER = [
  'Namespace', 'NetworkPolicy', 'ResourceQuota', 'LimitRange', 'PodSecurityPolicy', 'PodDisruptionBudget', 'ServiceAccount',
  'Secret', 'ConfigMap', 'StorageClass', 'PersistentVolume', 'PersistentVolumeClaim', 'CustomResourceDefinition',
  'ClusterRole', 'ClusterRoleBinding', 'Role', 'RoleBinding', 'Service', 'DaemonSet', 'Pod', 'ReplicationController',
  'ReplicaSet', 'Deployment', 'HorizontalPodAutoscaler', 'StatefulSet', 'Job', 'CronJob', 'IngressClass', 'Ingress', 'APIService',
];

export interface RenderOptions {
  /** `.Release.Name` (default "nodemesh"). */
  release?: string;
  /** `.Release.Namespace` (default "nodemesh-system"). */
  namespace?: string;
  /** Values merged over values.yaml, in order (helm's -f files, then --set). */
  values?: Record<string, unknown>[];
}

/** One rendered object: its template, kind and name, and its YAML text. */
export interface RenderedDoc {
  source: string;
  kind: string;
  name: string;
  text: string;
}

export interface RenderedChart {
  /** The crds/ files, verbatim, by name. */
  crds: RenderedDoc[];
  /** The templates' objects, in install order. */
  docs: RenderedDoc[];
}

const isMap = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** helm's value merge: maps merge key by key, anything else replaces, and null deletes the key. */
export function mergeValues(base: Record<string, unknown>, over: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = { ...base };
  for (const [k, v] of Object.entries(over)) {
    if (v === null) delete out[k];
    else if (isMap(v) && isMap(out[k])) out[k] = mergeValues(out[k], v);
    else out[k] = v;
  }
  return out;
}

/** `a.b.c=v` as helm's --set reads it (the value as a YAML scalar: 1, true, "x"). */
export function parseSet(expr: string): Record<string, unknown> {
  const eq = expr.indexOf('=');
  if (eq <= 0) throw new ConfigError('NM_ERR_CHART', `--set needs key=value, got ${JSON.stringify(expr)}`);
  const value: unknown = parse(expr.slice(eq + 1));
  return expr
    .slice(0, eq)
    .split('.')
    .reduceRight<unknown>((acc, k) => ({ [k]: acc }), value) as Record<string, unknown>;
}

function readYamlMap(file: string): Record<string, unknown> {
  let v: unknown;
  try {
    v = parse(readFileSync(file, 'utf8'));
  } catch (e) {
    throw new ConfigError('NM_ERR_CHART', `not valid YAML: ${(e as Error).message}`, { where: file, cause: e });
  }
  if (v === null || v === undefined) return {};
  if (!isMap(v)) throw new ConfigError('NM_ERR_CHART', 'must be a YAML map', { where: file });
  return v;
}

/** Chart.yaml's fields as helm exposes them: `.Chart.Name`, `.Chart.AppVersion`, … */
function chartObject(meta: Record<string, unknown>): Record<string, unknown> {
  return Object.fromEntries(Object.entries(meta).map(([k, v]) => [k[0]!.toUpperCase() + k.slice(1), v]));
}

/** Splits one template's output into its objects (skipping empty ones), each parsed for kind and name. */
function splitDocs(source: string, text: string): RenderedDoc[] {
  const out: RenderedDoc[] = [];
  for (const part of text.split(/^---[ \t]*$/m)) {
    if (part.trim() === '' || part.split('\n').every((l) => l.trim() === '' || l.trimStart().startsWith('#'))) continue;
    const docs = parseAllDocuments(part);
    const doc = docs[0];
    if (!doc || doc.errors.length) throw new ConfigError('NM_ERR_CHART', `YAML parse error: ${doc?.errors[0]?.message ?? 'empty'}`, { where: source });
    const o = doc.toJS() as { kind?: unknown; metadata?: { name?: unknown } } | null;
    if (!o || typeof o.kind !== 'string') throw new ConfigError('NM_ERR_CHART', 'an object without a kind', { where: source });
    out.push({ source, kind: o.kind, name: String(o.metadata?.name ?? ''), text: part.replace(/^\n+/, '').replace(/\s+$/, '') + '\n' });
  }
  return out;
}

const order = (kind: string) => {
  const i = INSTALL_ORDER.indexOf(kind);
  return i < 0 ? INSTALL_ORDER.length : i;
};

/** Renders the chart in `chartDir` (helm's chart layout) with `o`'s release and values. */
export function renderChart(chartDir: string, o: RenderOptions = {}): RenderedChart {
  const meta = readYamlMap(join(chartDir, 'Chart.yaml'));
  const name = String(meta.name ?? basename(chartDir));
  let values = readYamlMap(join(chartDir, 'values.yaml'));
  for (const v of o.values ?? []) values = mergeValues(values, v);
  const top = {
    Values: values,
    Chart: chartObject(meta),
    Release: { Name: o.release ?? 'nodemesh', Namespace: o.namespace ?? 'nodemesh-system', Service: 'Helm', IsInstall: true, IsUpgrade: false, Revision: 1 },
  };
  const r = new Renderer(chartFuncs);
  const tdir = join(chartDir, 'templates');
  const files = readdirSync(tdir).sort();
  const parsed = files.map((f) => ({ f, source: `${name}/templates/${f}`, nodes: parseTemplate(readFileSync(join(tdir, f), 'utf8'), `${name}/templates/${f}`, r.defs) }));
  const docs: RenderedDoc[] = [];
  for (const t of parsed) {
    if (t.f.startsWith('_') || !/\.ya?ml$/.test(t.f)) continue;
    docs.push(...splitDocs(t.source, r.run(t.nodes, top, t.source)));
  }
  docs.sort((a, b) => order(a.kind) - order(b.kind));
  let crdFiles: string[] = [];
  try {
    crdFiles = readdirSync(join(chartDir, 'crds')).filter((f) => /\.ya?ml$/.test(f)).sort();
  } catch {
    /* a chart without crds/ */
  }
  const crds = crdFiles.flatMap((f) => splitDocs(`${name}/crds/${f}`, readFileSync(join(chartDir, 'crds', f), 'utf8')));
  return { crds, docs };
}

/** Documents as `helm template` prints them: `---`, a `# Source:` line, the object. */
export function formatDocs(docs: RenderedDoc[]): string {
  return docs.map((d) => `---\n# Source: ${d.source}\n${d.text}`).join('');
}
