// The object shape and the Status errors of the Kubernetes stand-in: what a failed API call
// answers (a v1 Status with code, reason and message worded as kube-apiserver words them).
export interface KubeObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; uid?: string; resourceVersion?: string; labels?: Record<string, string>; [k: string]: unknown };
  [k: string]: unknown;
}

export interface KubeStatus {
  kind: 'Status';
  apiVersion: 'v1';
  metadata: Record<string, never>;
  status: 'Failure' | 'Success';
  message: string;
  reason: string;
  code: number;
  details?: { name?: string; group?: string; kind?: string; uid?: string; causes?: { reason?: string; message: string; field?: string }[] };
}

/** A refused operation; `status` is the body the HTTP API sends, `code` its HTTP status. */
export class KubeApiError extends Error {
  readonly code: number;
  readonly status: KubeStatus;
  constructor(code: number, reason: string, message: string, details?: KubeStatus['details']) {
    super(message);
    this.name = 'KubeApiError';
    this.code = code;
    this.status = { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message, reason, code, ...(details ? { details } : {}) };
  }
}

/** `<plural>.<group> "<name>"` as the real server prefixes its messages (`pods "a"` for core). */
const what = (plural: string, group: string, name: string): string => `${group ? `${plural}.${group}` : plural} "${name}"`;

export const notFound = (plural: string, group: string, name: string): KubeApiError =>
  new KubeApiError(404, 'NotFound', `${what(plural, group, name)} not found`, { name, group: group || undefined, kind: plural });
export const alreadyExists = (plural: string, group: string, name: string): KubeApiError =>
  new KubeApiError(409, 'AlreadyExists', `${what(plural, group, name)} already exists`, { name, group: group || undefined, kind: plural });
export const conflict = (plural: string, group: string, name: string): KubeApiError =>
  new KubeApiError(409, 'Conflict', `Operation cannot be fulfilled on ${what(plural, group, name)}: the object has been modified; please apply your changes to the latest version and try again`, { name, group: group || undefined, kind: plural });
export const badRequest = (message: string): KubeApiError => new KubeApiError(400, 'BadRequest', message);
export const invalid = (kind: string, group: string, name: string, field: string, message: string): KubeApiError =>
  new KubeApiError(422, 'Invalid', `${kind}${group ? `.${group}` : ''} "${name}" is invalid: ${field}: ${message}`, {
    name, group: group || undefined, kind, causes: [{ reason: 'FieldValueInvalid', message, field }],
  });
export const expired = (message: string): KubeApiError => new KubeApiError(410, 'Expired', message);
export const methodNotAllowed = (): KubeApiError => new KubeApiError(405, 'MethodNotAllowed', 'the server does not allow this method on the requested resource');
