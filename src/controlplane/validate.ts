// Parses one config file into typed resources and problems, each with file and line: the
// k8s loader's checks plus the shape of AuthorizationPolicy, PeerAuthentication, HTTPRoute,
// VirtualService and DestinationRule (validate-policy.ts, validate-route.ts,
// validate-virtualservice.ts, validate-destinationrule.ts), pointing at the offending field's line.
import { LineCounter, parseAllDocuments, type Document } from 'yaml';
import { fieldPathOf, isCyclic, isRecord, parseConfigText, type FieldPath, type K8sObject } from '../k8s/index.js';
import type { AuthorizationPolicy, HttpRoute, PeerAuthentication } from './resources.js';
import type { DestinationRule, VirtualService } from './resources-istio-net.js';
import { toDestinationRule } from './validate-destinationrule.js';
import { toAuthorizationPolicy, toPeerAuthentication } from './validate-policy.js';
import { toHttpRoute } from './validate-route.js';
import { toVirtualService } from './validate-virtualservice.js';

export type ProblemCode = 'NM_ERR_CONFIG_YAML' | 'NM_ERR_CONFIG_INVALID' | 'NM_ERR_CONFIG_CONFLICT' | 'NM_ERR_POLICY';

export interface ConfigProblem {
  code: ProblemCode;
  severity: 'error' | 'warning';
  file: string;
  line: number;
  message: string;
  /** `Kind namespace/name` when the problem concerns one resource. */
  resource?: string;
}

export type ConfigObject = K8sObject | AuthorizationPolicy | PeerAuthentication | HttpRoute | VirtualService | DestinationRule;

export interface ParsedFile {
  objects: ConfigObject[];
  problems: ConfigProblem[];
  /** Identities (`Kind/ns/name`) of resources that are in the file but invalid. */
  invalid: Set<string>;
}

export function identityOf(o: { kind: string; metadata: { namespace: string; name: string } }): string {
  return `${o.kind}/${o.metadata.namespace}/${o.metadata.name}`;
}

export function describe(o: { kind: string; metadata: { namespace: string; name: string } }): string {
  return `${o.kind} ${o.metadata.namespace ? `${o.metadata.namespace}/` : ''}${o.metadata.name}`;
}

/**
 * The typed view of one resource the k8s loader accepted: the policy and routing kinds are
 * checked here (throwing a field error, fieldPathOf), the rest pass as they are. Shared by the
 * config directory and the Kubernetes API source, so a resource means the same from either.
 */
export function typedConfigObject(o: K8sObject, lineOf: (p: FieldPath) => number): ConfigObject {
  if (o.kind === 'AuthorizationPolicy') return toAuthorizationPolicy(o, lineOf);
  if (o.kind === 'PeerAuthentication') return toPeerAuthentication(o);
  if (o.kind === 'HTTPRoute') return toHttpRoute(o, lineOf);
  if (o.kind === 'VirtualService') return toVirtualService(o, lineOf);
  if (o.kind === 'DestinationRule') return toDestinationRule(o, lineOf);
  return o;
}

interface DocInfo {
  doc: Document.Parsed;
  raw: unknown;
}

/** Parses and validates one file's text. Never throws for bad content. */
export function parseConfigFile(text: string, file: string): ParsedFile {
  const base = parseConfigText(text, file);
  // YAML syntax errors are located by this module's own parse (below), from their offsets.
  const problems: ConfigProblem[] = base.errors
    .filter((e) => e.code !== 'NM_ERR_CONFIG_YAML')
    .map((e) => ({ code: e.code, severity: 'error', file: e.file, line: e.line, message: e.message }));
  const invalid = new Set<string>();
  // A second, position-keeping parse locates fields: documents keyed by their first content line.
  const lc = new LineCounter();
  const docs = new Map<number, DocInfo>();
  for (const doc of parseAllDocuments(text, { lineCounter: lc, prettyErrors: false }) as Document.Parsed[]) {
    if (doc.errors.length > 0) {
      for (const e of doc.errors) {
        problems.push({ code: 'NM_ERR_CONFIG_YAML', severity: 'error', file, line: lc.linePos(e.pos[0]).line, message: e.message.split('\n')[0] ?? e.message });
      }
      continue;
    }
    const start = (doc.contents as { range?: [number, number, number] } | null)?.range?.[0];
    if (start === undefined) continue;
    let raw: unknown;
    try {
      raw = doc.toJS();
      if (isCyclic(raw)) continue; // the loader above reports the cycle
    } catch {
      continue; // the loader above reports it (an unresolved alias or an alias bomb)
    }
    docs.set(lc.linePos(start).line, { doc, raw });
  }
  // Resources the loader rejected: name them when the document says what they are, so the
  // last good version of exactly that resource is kept.
  for (const pr of problems) {
    const d = docs.get(pr.line);
    const raw = d?.raw;
    if (isRecord(raw) && typeof raw.kind === 'string' && isRecord(raw.metadata) && typeof raw.metadata.name === 'string') {
      const ns = raw.kind === 'Namespace' ? '' : typeof raw.metadata.namespace === 'string' ? raw.metadata.namespace : 'default';
      const meta = { kind: raw.kind, metadata: { namespace: ns, name: raw.metadata.name } };
      invalid.add(identityOf(meta));
      pr.resource = describe(meta);
    }
  }
  const objects: ConfigObject[] = [];
  for (const o of base.objects) {
    const d = docs.get(o.source.line);
    const lineOf = (p: FieldPath): number => {
      if (!d) return o.source.line;
      for (let n = p.length; n > 0; n--) {
        const node = d.doc.getIn(p.slice(0, n), true) as { range?: [number, number, number] } | undefined;
        if (node?.range) return lc.linePos(node.range[0]).line;
        // A map key's line, when its value is empty.
        const parent = n > 1 ? (d.doc.getIn(p.slice(0, n - 1), true) as { items?: { key?: { value?: unknown; range?: [number, number, number] } }[] } | undefined) : undefined;
        const key = parent?.items?.find((it) => it.key?.value === p[n - 1])?.key;
        if (key?.range) return lc.linePos(key.range[0]).line;
      }
      return o.source.line;
    };
    try {
      objects.push(typedConfigObject(o, lineOf));
    } catch (e) {
      const path = fieldPathOf(e);
      if (!path) throw e;
      invalid.add(identityOf(o));
      const err = e as Error & { code: ProblemCode };
      problems.push({ code: err.code, severity: 'error', file, line: lineOf(path), message: `${describe(o)}: ${err.message}`, resource: describe(o) });
    }
  }
  return { objects, problems, invalid };
}
