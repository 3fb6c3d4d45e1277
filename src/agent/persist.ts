// The agent's last good xDS state on disk: the snapshot file's format (the control plane's
// resource bytes and versions, per type), its validating reader, and a debounced writer that
// saves after every applied update and once more at shutdown.
import { readFileSync } from 'node:fs';
import { AgentError } from '../errors.js';
import { writeFileAtomic } from '../files.js';
import type { Logger } from '../log.js';
import type { HeldRejection, HeldResource, XdsSnapshot } from '../xds/index.js';

/** The format tag of the snapshot file; a file with another tag is not read. */
export const SNAPSHOT_FORMAT = 'nodemesh.io/xds-snapshot/v1';

interface FileResource {
  name: string;
  version: string;
  typeUrl: string;
  /** The Any's value, base64. */
  value: string;
}

interface FileRejection {
  name: string;
  version: string;
  reason: string;
  typeUrl?: string;
  value?: string;
}

interface SnapshotFile {
  format: typeof SNAPSHOT_FORMAT;
  node: string;
  savedAt: string;
  types: Record<string, { resources: FileResource[]; rejected: FileRejection[] }>;
}

/** The file's text for a snapshot (what writeSnapshot writes). */
export function encodeSnapshot(snap: XdsSnapshot, node: string, now = new Date()): string {
  const types: SnapshotFile['types'] = {};
  for (const [t, v] of Object.entries(snap)) {
    types[t] = {
      resources: v.resources.map((r) => ({ name: r.name, version: r.version, typeUrl: r.resource.type_url, value: Buffer.from(r.resource.value).toString('base64') })),
      rejected: v.rejected.map((j) => ({
        name: j.name,
        version: j.version,
        reason: j.reason,
        ...(j.resource ? { typeUrl: j.resource.type_url, value: Buffer.from(j.resource.value).toString('base64') } : {}),
      })),
    };
  }
  const file: SnapshotFile = { format: SNAPSHOT_FORMAT, node, savedAt: now.toISOString(), types };
  return JSON.stringify(file) + '\n';
}

const isStr = (v: unknown): v is string => typeof v === 'string';
const isObj = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;

function bytes(v: unknown, where: string): Uint8Array {
  if (!isStr(v) || !BASE64.test(v)) throw new TypeError(`${where}.value is not base64`);
  return Buffer.from(v, 'base64');
}

/**
 * Parses the file's text. Throws TypeError naming the first field that is wrong; the
 * resources themselves are validated later, by the xDS handlers, as the wire's are.
 */
export function decodeSnapshot(text: string, node: string): XdsSnapshot {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    // Not the parser's message: it quotes the file's content.
    throw new TypeError('not valid JSON (truncated or overwritten?)');
  }
  if (!isObj(raw) || raw.format !== SNAPSHOT_FORMAT) throw new TypeError(`format is not ${SNAPSHOT_FORMAT}`);
  if (raw.node !== node) throw new TypeError(`it was saved by node ${JSON.stringify(raw.node)}, not ${JSON.stringify(node)}`);
  if (!isObj(raw.types)) throw new TypeError('types is not an object');
  const out: XdsSnapshot = {};
  for (const [t, v] of Object.entries(raw.types)) {
    if (!isObj(v) || !Array.isArray(v.resources) || !Array.isArray(v.rejected)) throw new TypeError(`types[${t}] needs resources and rejected lists`);
    const resources: HeldResource[] = v.resources.map((r: unknown, i) => {
      const w = `types[${t}].resources[${i}]`;
      if (!isObj(r) || !isStr(r.name) || !r.name || !isStr(r.version) || !isStr(r.typeUrl)) throw new TypeError(`${w} needs name, version and typeUrl`);
      return { name: r.name, version: r.version, resource: { type_url: r.typeUrl, value: bytes(r.value, w) } };
    });
    const rejected: HeldRejection[] = v.rejected.map((r: unknown, i) => {
      const w = `types[${t}].rejected[${i}]`;
      if (!isObj(r) || !isStr(r.name) || !r.name || !isStr(r.version) || !isStr(r.reason)) throw new TypeError(`${w} needs name, version and reason`);
      if (r.value === undefined) return { name: r.name, version: r.version, reason: r.reason };
      if (!isStr(r.typeUrl)) throw new TypeError(`${w}.typeUrl is missing`);
      return { name: r.name, version: r.version, reason: r.reason, resource: { type_url: r.typeUrl, value: bytes(r.value, w) } };
    });
    out[t] = { resources, rejected };
  }
  return out;
}

/**
 * Reads the snapshot file; a missing file is undefined (a first start). A file that cannot be
 * read or parsed throws NM_ERR_STATE_FILE naming it: the caller starts as if it had none.
 */
export function readSnapshot(path: string, node: string): XdsSnapshot | undefined {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new AgentError('NM_ERR_STATE_FILE', `cannot read the xDS snapshot: ${(e as Error).message}`, { cause: e, where: path });
  }
  try {
    return decodeSnapshot(text, node);
  } catch (e) {
    throw new AgentError('NM_ERR_STATE_FILE', `the xDS snapshot is corrupt: ${(e as Error).message}`, { where: path });
  }
}

/**
 * Saves a snapshot at most once per `delayMs` after changes, and at once on flush(). A write
 * that fails is logged and retried on the next change: the snapshot on disk is then older,
 * never half-written (writeFileAtomic).
 */
export class SnapshotWriter {
  readonly #path: string;
  readonly #take: () => string;
  readonly #log: Logger;
  readonly #delayMs: number;
  #timer: NodeJS.Timeout | undefined;
  #dirty = false;

  constructor(o: { path: string; take: () => string; log: Logger; delayMs?: number }) {
    this.#path = o.path;
    this.#take = o.take;
    this.#log = o.log;
    this.#delayMs = o.delayMs ?? 250;
  }

  /** Marks the state changed; the write follows within delayMs. */
  schedule(): void {
    this.#dirty = true;
    if (this.#timer) return;
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      this.flush();
    }, this.#delayMs);
    this.#timer.unref();
  }

  /** Writes now if anything changed since the last write. */
  flush(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    if (!this.#dirty) return;
    this.#dirty = false;
    try {
      writeFileAtomic(this.#path, this.#take(), { mode: 0o600 });
    } catch (err) {
      this.#dirty = true;
      this.#log.error({ err: new AgentError('NM_ERR_STATE_FILE', `cannot save the xDS snapshot: ${(err as Error).message}`, { where: this.#path }) }, 'xDS snapshot not saved; the previous one stays');
    }
  }
}
