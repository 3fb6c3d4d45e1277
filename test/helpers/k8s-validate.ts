// Validates Kubernetes objects against the API's OpenAPI schemas without a cluster. It stands in
// for the API server's checks at `kubectl apply --validate=strict`: types, required fields and
// enums come from kubernetes-models (ajv validators generated from the Kubernetes OpenAPI
// spec); unknown fields, which those schemas allow, are found with @kubernetes/client-node's
// type map (generated from the same spec), as the server's strict field validation does.
import * as k8s from '@kubernetes/client-node';

interface Attr {
  name: string;
  baseName: string;
  type: string;
}

/** The models' static type maps, by generated class name (V1DaemonSet, V1Container, …). */
const models = k8s as unknown as Record<string, { getAttributeTypeMap?: () => Attr[] } | undefined>;

/** The client-node model of an apiVersion/kind: `apps/v1` DaemonSet → V1DaemonSet. */
function modelName(apiVersion: string, kind: string): string {
  const version = apiVersion.split('/').pop()!;
  return version[0]!.toUpperCase() + version.slice(1) + kind;
}

const isMap = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** Fields of `v` (at JSON pointer `at`) that the model `type` does not have, recursively. */
export function unknownFields(v: unknown, type: string, at = ''): string[] {
  const arr = /^Array<(.+)>$/.exec(type);
  if (arr) return Array.isArray(v) ? v.flatMap((x, i) => unknownFields(x, arr[1]!, `${at}/${i}`)) : [];
  const dict = /^\{ \[key: string\]: (.+); \}$/.exec(type);
  if (dict) return isMap(v) ? Object.entries(v).flatMap(([k, x]) => unknownFields(x, dict[1]!, `${at}/${k}`)) : [];
  const model = models[type]?.getAttributeTypeMap;
  if (!model || !isMap(v)) return []; // a scalar, IntOrString, any/object: nothing to walk
  const attrs = model();
  const out: string[] = [];
  for (const [k, x] of Object.entries(v)) {
    const attr = attrs.find((a) => a.baseName === k);
    if (!attr) out.push(`${at}/${k}`);
    else out.push(...unknownFields(x, attr.type, `${at}/${k}`));
  }
  return out;
}

export interface ValidationResult {
  ok: boolean;
  /** One line per problem: `DaemonSet nodemesh-agent: /spec/x must be integer`. */
  problems: string[];
}

interface ModelClass {
  new (data: unknown): { validate(): void };
}

/** Validates one object: its kind must be one kubernetes-models knows (a built-in API type). */
export async function validateObject(o: unknown): Promise<ValidationResult> {
  if (!isMap(o) || typeof o.apiVersion !== 'string' || typeof o.kind !== 'string') return { ok: false, problems: ['not a Kubernetes object: apiVersion and kind are required'] };
  const { apiVersion, kind } = o;
  const what = `${kind} ${String((o.metadata as { name?: unknown } | undefined)?.name ?? '')}`;
  const gv = apiVersion.includes('/') ? apiVersion : `v1`;
  let Model: ModelClass | undefined;
  try {
    Model = ((await import(`kubernetes-models/${gv}/${kind}`)) as Record<string, ModelClass>)[kind];
  } catch {
    Model = undefined;
  }
  if (!Model) return { ok: false, problems: [`${what}: no schema for ${apiVersion} ${kind}`] };
  const problems: string[] = [];
  try {
    new Model(o).validate();
  } catch (e) {
    const errs = (e as { errors?: { instancePath: string; message?: string; params?: Record<string, unknown> }[] }).errors;
    if (!errs) throw e;
    for (const x of errs) {
      const field = x.params?.missingProperty ? `${x.instancePath}/${String(x.params.missingProperty)}` : x.instancePath;
      problems.push(`${what}: ${field || '/'} ${x.message ?? 'is invalid'}`);
    }
  }
  for (const f of unknownFields(o, modelName(apiVersion, kind))) problems.push(`${what}: ${f} is an unknown field`);
  return { ok: problems.length === 0, problems };
}
