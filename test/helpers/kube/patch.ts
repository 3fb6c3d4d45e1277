// PATCH bodies as kube-apiserver applies them: JSON merge patch (RFC 7386), JSON patch
// (RFC 6902), and strategic merge patch reduced to merge patch plus keyed merging of the lists
// that matter here (conditions by type; containers, env, volumes by name).
import { badRequest, KubeApiError } from './errors.js';

type Json = unknown;
const isObj = (v: Json): v is Record<string, Json> => typeof v === 'object' && v !== null && !Array.isArray(v);
const clone = <T>(v: T): T => structuredClone(v);

/** RFC 7386: objects merge, null deletes, everything else (lists too) replaces. */
export function mergePatch(target: Json, patch: Json): Json {
  if (!isObj(patch)) return clone(patch);
  const out: Record<string, Json> = isObj(target) ? { ...target } : {};
  for (const [k, v] of Object.entries(patch)) {
    if (v === null) delete out[k];
    else out[k] = mergePatch(out[k], v);
  }
  return out;
}

/** The merge keys of the lists a strategic merge patch merges instead of replacing. */
const MERGE_KEYS: Record<string, string> = { conditions: 'type', containers: 'name', initContainers: 'name', env: 'name', volumes: 'name', volumeMounts: 'mountPath' };

export function strategicMergePatch(target: Json, patch: Json): Json {
  if (!isObj(patch)) return clone(patch);
  const out: Record<string, Json> = isObj(target) ? { ...target } : {};
  for (const [k, v] of Object.entries(patch)) {
    if (k.startsWith('$')) continue;
    const key = MERGE_KEYS[k];
    if (v === null) delete out[k];
    else if (key && Array.isArray(v) && Array.isArray(out[k])) {
      const list = [...(out[k] as Json[])];
      for (const item of v) {
        if (!isObj(item) || item[key] === undefined) { list.push(clone(item)); continue; }
        const at = list.findIndex((e) => isObj(e) && e[key] === item[key]);
        if (item.$patch === 'delete') { if (at >= 0) list.splice(at, 1); }
        else if (at >= 0) list[at] = strategicMergePatch(list[at], item);
        else list.push(strategicMergePatch({}, item));
      }
      out[k] = list;
    } else out[k] = strategicMergePatch(out[k], v);
  }
  return out;
}

const unprocessable = (msg: string): KubeApiError => new KubeApiError(422, 'Invalid', msg);

function pointer(path: string): string[] {
  if (path === '') return [];
  if (!path.startsWith('/')) throw unprocessable(`the server rejected our request due to an error in our request: invalid JSON pointer ${path}`);
  return path.slice(1).split('/').map((s) => s.replace(/~1/g, '/').replace(/~0/g, '~'));
}

function walk(doc: Json, parts: string[]): { parent: Json; key: string } {
  let cur = doc;
  for (const p of parts.slice(0, -1)) {
    cur = Array.isArray(cur) ? cur[Number(p)] : isObj(cur) ? cur[p] : undefined;
    if (cur === undefined) throw unprocessable(`the server rejected our request due to an error in our request: doc is missing path: ${parts.join('/')}`);
  }
  return { parent: cur, key: parts[parts.length - 1] ?? '' };
}

function getAt(doc: Json, parts: string[]): Json {
  if (!parts.length) return doc;
  const { parent, key } = walk(doc, parts);
  const v = Array.isArray(parent) ? parent[Number(key)] : isObj(parent) ? parent[key] : undefined;
  if (v === undefined) throw unprocessable(`the server rejected our request due to an error in our request: doc is missing key: /${parts.join('/')}`);
  return v;
}

function removeAt(doc: Json, parts: string[]): void {
  const { parent, key } = walk(doc, parts);
  getAt(doc, parts);
  if (Array.isArray(parent)) parent.splice(Number(key), 1);
  else delete (parent as Record<string, Json>)[key];
}

function addAt(doc: Json, parts: string[], value: Json, replace: boolean): Json {
  if (!parts.length) return clone(value);
  if (replace) getAt(doc, parts);
  const { parent, key } = walk(doc, parts);
  if (Array.isArray(parent)) {
    const idx = key === '-' ? parent.length : Number(key);
    if (!Number.isInteger(idx) || idx < 0 || idx > parent.length) throw unprocessable(`the server rejected our request due to an error in our request: index out of range: ${key}`);
    if (replace) parent[idx] = clone(value);
    else parent.splice(idx, 0, clone(value));
  } else if (isObj(parent)) parent[key] = clone(value);
  else throw unprocessable(`the server rejected our request due to an error in our request: doc is missing path: /${parts.join('/')}`);
  return doc;
}

/** RFC 6902 operations applied in order; a failed `test` or a missing path is a 422. */
export function jsonPatch(target: Json, ops: Json): Json {
  if (!Array.isArray(ops)) throw badRequest('json: cannot unmarshal object into Go value of type jsonpatch.Patch');
  let doc = clone(target);
  for (const op of ops as Record<string, Json>[]) {
    const parts = pointer(String(op.path ?? ''));
    switch (op.op) {
      case 'add': doc = addAt(doc, parts, op.value, false); break;
      case 'replace': doc = addAt(doc, parts, op.value, true); break;
      case 'remove': removeAt(doc, parts); break;
      case 'copy': doc = addAt(doc, parts, getAt(doc, pointer(String(op.from ?? ''))), false); break;
      case 'move': { const from = pointer(String(op.from ?? '')); const v = getAt(doc, from); removeAt(doc, from); doc = addAt(doc, parts, v, false); break; }
      case 'test':
        if (JSON.stringify(getAt(doc, parts)) !== JSON.stringify(op.value)) throw unprocessable(`the server rejected our request due to an error in our request: testing value /${parts.join('/')} failed`);
        break;
      default: throw unprocessable(`the server rejected our request due to an error in our request: Unexpected kind: ${String(op.op)}`);
    }
  }
  return doc;
}

/** Applies a PATCH body by its Content-Type; an unknown type is the real server's 415. */
export function applyPatch(contentType: string, target: Json, body: Json): Json {
  const ct = contentType.split(';')[0]!.trim();
  if (ct === 'application/merge-patch+json') return mergePatch(target, body);
  if (ct === 'application/strategic-merge-patch+json') return strategicMergePatch(target, body);
  if (ct === 'application/json-patch+json') return jsonPatch(target, body);
  throw new KubeApiError(415, 'UnsupportedMediaType', `the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json`);
}
