// The one field-validation toolkit for Kubernetes-style YAML: typed readers that throw a
// ConfigError carrying the offending field's path, used by the k8s loader and the control plane.
import { ConfigError } from '../errors.js';
import { parseCidr } from '../net/index.js';

/** Where a field is inside its resource: `['spec', 'containers', 0, 'command']`. */
export type FieldPath = (string | number)[];

/** The codes a field check reports with: a malformed field, or a policy that cannot be enforced. */
export type FieldCode = 'NM_ERR_CONFIG_INVALID' | 'NM_ERR_POLICY';

/** `spec.containers[0].command`. */
export function formatPath(p: FieldPath): string {
  return p.map((s, i) => (typeof s === 'number' ? `[${s}]` : i === 0 ? s : `.${s}`)).join('');
}

/** The error every check throws: a ConfigError whose details carry the field path. */
export function fieldError(message: string, path: FieldPath, code: FieldCode = 'NM_ERR_CONFIG_INVALID'): ConfigError {
  return new ConfigError(code, message, { path });
}

/** The field path of an error thrown by these checks; undefined for any other error. */
export function fieldPathOf(err: unknown): FieldPath | undefined {
  return err instanceof ConfigError && Array.isArray(err.details.path) ? (err.details.path as FieldPath) : undefined;
}

export function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** The YAML name of a value's type, for messages. */
export function typeName(v: unknown): string {
  return v === null ? 'null' : Array.isArray(v) ? 'list' : typeof v === 'object' ? 'map' : typeof v;
}

const missing = (v: unknown): v is undefined | null => v === undefined || v === null;

export function map(v: unknown, p: FieldPath, required = false): Record<string, unknown> | undefined {
  if (missing(v)) {
    if (required) throw fieldError(`${formatPath(p)} is required`, p);
    return undefined;
  }
  if (!isRecord(v)) throw fieldError(`${formatPath(p)} must be a map, got ${typeName(v)}`, p);
  return v;
}

/** A list; absent or null is empty. */
export function list(v: unknown, p: FieldPath): unknown[] {
  if (missing(v)) return [];
  if (!Array.isArray(v)) throw fieldError(`${formatPath(p)} must be a list, got ${typeName(v)}`, p);
  return v;
}

export function str(v: unknown, p: FieldPath, required = false): string | undefined {
  if (missing(v)) {
    if (required) throw fieldError(`${formatPath(p)} is required`, p);
    return undefined;
  }
  if (typeof v !== 'string') throw fieldError(`${formatPath(p)} must be a string, got ${typeName(v)} ${JSON.stringify(v)}`, p);
  return v;
}

/**
 * A list of strings. A number or boolean entry is a type error, not coerced: Kubernetes'
 * decoder rejects `command: [sleep, 10]` ("cannot unmarshal number into ... of type string"),
 * and so does Istio's for policy fields, so the same YAML fails here as it would there.
 */
export function strList(v: unknown, p: FieldPath): string[] {
  return list(v, p).map((x, i) => {
    if (typeof x !== 'string') throw fieldError(`${formatPath([...p, i])} must be a string, got ${typeName(x)} ${JSON.stringify(x)} (quote it)`, [...p, i]);
    return x;
  });
}

/** A map of strings (labels, annotations, selectors); absent or null is empty. */
export function strMap(v: unknown, p: FieldPath): Record<string, string> {
  const m = map(v, p) ?? {};
  for (const [k, x] of Object.entries(m)) {
    if (typeof x !== 'string') throw fieldError(`${formatPath([...p, k])} must be a string, got ${typeName(x)} ${JSON.stringify(x)}`, [...p, k]);
  }
  return m as Record<string, string>;
}

export function enumOf<T extends string>(v: unknown, p: FieldPath, allowed: readonly T[], dflt: T): T {
  const s = str(v, p);
  if (s === undefined) return dflt;
  if (!(allowed as readonly string[]).includes(s)) throw fieldError(`${formatPath(p)}: unknown value ${JSON.stringify(s)}; expected one of ${allowed.join(', ')}`, p);
  return s as T;
}

/** Refuses keys outside `allowed`, so a typo is reported instead of silently ignored. */
export function onlyKeys(m: Record<string, unknown>, p: FieldPath, allowed: readonly string[]): void {
  for (const k of Object.keys(m)) {
    if (!allowed.includes(k)) throw fieldError(`${formatPath([...p, k])}: unknown field; expected one of ${allowed.join(', ')}`, [...p, k]);
  }
}

/** A port given as a YAML number, 1-65535. */
export function port(v: unknown, p: FieldPath, required = false): number | undefined {
  if (missing(v)) {
    if (required) throw fieldError(`${formatPath(p)} is required`, p);
    return undefined;
  }
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 1 || v > 65535) throw fieldError(`${formatPath(p)} must be a port number 1-65535, got ${JSON.stringify(v)}`, p);
  return v;
}

/** A port given as a string (Istio's `ports: ["8080"]`), 1-65535. */
export function portString(s: string, p: FieldPath): string {
  if (!/^\d{1,5}$/.test(s) || Number(s) < 1 || Number(s) > 65535) throw fieldError(`${formatPath(p)}: ${JSON.stringify(s)} is not a port number 1-65535`, p);
  return s;
}

/** An IP address or CIDR given as a string. */
export function cidrString(s: string, p: FieldPath): string {
  try {
    parseCidr(s);
  } catch (e) {
    throw fieldError(`${formatPath(p)}: ${(e as Error).message}`, p);
  }
  return s;
}
