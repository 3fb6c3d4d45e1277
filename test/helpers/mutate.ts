// fast-check arbitraries that mutate valid examples, which find far more than pure noise: byte
// edits of an encoding (bit flips, interesting values, insertions, deletions, truncation, splices),
// structural edits of a JSON-like value (a field's type or value replaced, removed or added), and
// line edits of a text (YAML: indentation, anchors, flow markers, truncation).
import fc from 'fast-check';

// ---- bytes ---------------------------------------------------------------------------------

type ByteOp =
  | { op: 'flip'; at: number; bit: number }
  | { op: 'set'; at: number; value: number }
  | { op: 'insert'; at: number; bytes: Uint8Array }
  | { op: 'delete'; at: number; len: number }
  | { op: 'truncate'; at: number }
  | { op: 'duplicate'; at: number; len: number }
  | { op: 'splice'; at: number; other: number; from: number };

const INTERESTING_BYTES = [0x00, 0x01, 0x7f, 0x80, 0xff, 0x08, 0x0a, 0x10, 0x12, 0x1a, 0x22, 0x2a];

const byteOp: fc.Arbitrary<ByteOp> = fc.oneof(
  { weight: 4, arbitrary: fc.record({ op: fc.constant('flip' as const), at: fc.nat(), bit: fc.nat(7) }) },
  { weight: 3, arbitrary: fc.record({ op: fc.constant('set' as const), at: fc.nat(), value: fc.oneof(fc.constantFrom(...INTERESTING_BYTES), fc.nat(255)) }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('insert' as const), at: fc.nat(), bytes: fc.uint8Array({ minLength: 1, maxLength: 8 }) }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('delete' as const), at: fc.nat(), len: fc.integer({ min: 1, max: 8 }) }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('truncate' as const), at: fc.nat() }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('duplicate' as const), at: fc.nat(), len: fc.integer({ min: 1, max: 16 }) }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('splice' as const), at: fc.nat(), other: fc.nat(), from: fc.nat() }) },
);

function applyByteOp(b: Uint8Array, o: ByteOp, pool: readonly Uint8Array[]): Uint8Array {
  const n = b.length;
  const at = n === 0 ? 0 : o.at % (n + 1);
  switch (o.op) {
    case 'flip': {
      if (n === 0) return b;
      const c = Uint8Array.from(b);
      c[o.at % n]! ^= 1 << o.bit;
      return c;
    }
    case 'set': {
      if (n === 0) return Uint8Array.of(o.value);
      const c = Uint8Array.from(b);
      c[o.at % n] = o.value;
      return c;
    }
    case 'insert':
      return concat(b.subarray(0, at), o.bytes, b.subarray(at));
    case 'delete':
      return concat(b.subarray(0, at), b.subarray(Math.min(n, at + o.len)));
    case 'truncate':
      return b.subarray(0, at);
    case 'duplicate':
      return concat(b.subarray(0, Math.min(n, at + o.len)), b.subarray(at));
    case 'splice': {
      const other = pool[o.other % pool.length]!;
      return concat(b.subarray(0, at), other.subarray(other.length === 0 ? 0 : o.from % other.length));
    }
  }
}

function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((a, p) => a + p.length, 0));
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}

/** One of `seeds`, with 1 to `maxOps` byte edits; splices take from `pool` (default: the seeds). */
export function mutatedBytes(seeds: readonly Uint8Array[], maxOps = 4, pool: readonly Uint8Array[] = seeds): fc.Arbitrary<Uint8Array> {
  return fc.tuple(fc.nat(seeds.length - 1), fc.array(byteOp, { minLength: 1, maxLength: maxOps })).map(([i, ops]) => ops.reduce((b, o) => applyByteOp(b, o, pool), seeds[i]!));
}

// ---- JSON-like values ----------------------------------------------------------------------

type Path = (string | number)[];

function pathsOf(v: unknown, prefix: Path = [], out: Path[] = []): Path[] {
  out.push(prefix);
  if (Array.isArray(v)) v.forEach((x, i) => pathsOf(x, [...prefix, i], out));
  else if (v !== null && typeof v === 'object' && !(v instanceof Uint8Array)) for (const [k, x] of Object.entries(v)) pathsOf(x, [...prefix, k], out);
  return out;
}

/** Values that break validators: wrong types, edge numbers, hostile strings and keys. */
export const weirdValue: fc.Arbitrary<unknown> = fc.oneof(
  fc.constantFrom(null, true, false, 0, -1, 1, 65535, 65536, 4294967296, -0, 1.5, 1e308, Number.MAX_SAFE_INTEGER, '', ' ', '0', '-1', '65536', '1e3', 'null', 'true'),
  fc.constantFrom('0.0.0.0', '255.255.255.255', '10.0.0.256', '::', '::ffff:10.0.0.1', 'fe80::1%eth0', '10.0.0.0/33', '1.2.3', '01.2.3.4', '10.1.0.5'),
  fc.constantFrom('a'.repeat(300), '\u0000', '\n', 'é', '\ud800', 'x/y', '../..', '*', '${x}', '%s', '__proto__', 'constructor', 'ns/name', 'spiffe://cluster.local/ns/a/sa/b'),
  fc.integer(),
  fc.double(),
  fc.string({ maxLength: 20 }),
  fc.string({ maxLength: 12, unit: 'binary' }),
  fc.array(fc.oneof(fc.string({ maxLength: 6 }), fc.integer(), fc.constant(null)), { maxLength: 3 }),
  fc.dictionary(fc.oneof(fc.string({ maxLength: 6 }), fc.constantFrom('__proto__', 'constructor', 'name', 'kind')), fc.oneof(fc.string({ maxLength: 6 }), fc.integer(), fc.constant(null)), { maxKeys: 3 }),
  fc.constant({}),
  fc.constant([]),
);

type ValueOp =
  | { op: 'replace'; at: number; value: unknown }
  | { op: 'delete'; at: number }
  | { op: 'add'; at: number; key: string; value: unknown }
  | { op: 'wrap'; at: number }
  | { op: 'duplicate'; at: number }
  | { op: 'stringify'; at: number };

const valueOp: fc.Arbitrary<ValueOp> = fc.oneof(
  { weight: 5, arbitrary: fc.record({ op: fc.constant('replace' as const), at: fc.nat(), value: weirdValue }) },
  { weight: 3, arbitrary: fc.record({ op: fc.constant('delete' as const), at: fc.nat() }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('add' as const), at: fc.nat(), key: fc.oneof(fc.string({ maxLength: 8 }), fc.constantFrom('__proto__', 'constructor', 'kind', 'namespace', 'name', 'spec', 'ports', 'prevResult')), value: weirdValue }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('wrap' as const), at: fc.nat() }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('duplicate' as const), at: fc.nat() }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('stringify' as const), at: fc.nat() }) },
);

function clone<T>(v: T): T {
  return structuredClone(v);
}

function applyValueOp(root: unknown, o: ValueOp): unknown {
  const paths = pathsOf(root);
  const path = paths[o.at % paths.length]!;
  const r = clone(root);
  if (path.length === 0) {
    if (o.op === 'replace') return o.value;
    if (o.op === 'wrap') return [r];
    if (o.op === 'stringify') return JSON.stringify(r);
  }
  const parent = path.slice(0, -1).reduce<unknown>((p, k) => (p as Record<string | number, unknown>)[k], r) as Record<string | number, unknown> | unknown[] | undefined;
  const key = path[path.length - 1];
  const target = path.reduce<unknown>((p, k) => (p as Record<string | number, unknown>)[k], r);
  const set = (v: unknown) => {
    if (parent !== undefined && key !== undefined) (parent as Record<string | number, unknown>)[key] = v;
  };
  switch (o.op) {
    case 'replace':
      set(o.value);
      break;
    case 'delete':
      if (Array.isArray(parent) && typeof key === 'number') parent.splice(key, 1);
      else if (parent && key !== undefined) delete (parent as Record<string, unknown>)[key];
      break;
    case 'add':
      if (Array.isArray(target)) target.push(o.value);
      else if (target !== null && typeof target === 'object' && !ArrayBuffer.isView(target)) Object.defineProperty(target, o.key, { value: o.value, enumerable: true, writable: true, configurable: true });
      else set({ [o.key]: o.value });
      break;
    case 'wrap':
      set([target]);
      break;
    case 'duplicate':
      if (Array.isArray(parent) && typeof key === 'number') parent.splice(key, 0, clone(target));
      else if (Array.isArray(target)) target.push(...clone(target));
      break;
    case 'stringify':
      set(typeof target === 'string' ? Number(target) : JSON.stringify(target) ?? 'undefined');
      break;
  }
  return r;
}

/** One of `seeds` with 1 to `maxOps` structural edits. */
export function mutatedValue<T>(seeds: readonly T[], maxOps = 3): fc.Arbitrary<unknown> {
  return fc.tuple(fc.nat(seeds.length - 1), fc.array(valueOp, { minLength: 1, maxLength: maxOps })).map(([i, ops]) => ops.reduce<unknown>((v, o) => applyValueOp(v, o), clone(seeds[i]!)));
}

// ---- text lines ----------------------------------------------------------------------------

/** Fragments that mean something to a YAML parser. */
export const YAML_TOKENS = [
  '- ', ': ', ':', '{', '}', '[', ']', ',', '&a ', '*a', '*b', '<<: *a', '? ', '|', '>', "'", '"', '#', '!!binary ', '!!int ', '!!str ', '!!map ', '!!set ', '!foo ',
  '%YAML 1.1', '---', '...', '\t', '  ', '~', 'null', '0x1F', '1e400', '.nan', '- - ', 'key: &x {a: *x}', 'a: &a [*a]',
];

type LineOp =
  | { op: 'delete'; at: number }
  | { op: 'duplicate'; at: number }
  | { op: 'swap'; at: number; with: number }
  | { op: 'indent'; at: number; by: string }
  | { op: 'insertToken'; at: number; col: number; token: string }
  | { op: 'insertLine'; at: number; line: string }
  | { op: 'deleteChars'; at: number; col: number; len: number }
  | { op: 'truncate'; at: number; col: number };

const lineOp: fc.Arbitrary<LineOp> = fc.oneof(
  fc.record({ op: fc.constant('delete' as const), at: fc.nat() }),
  fc.record({ op: fc.constant('duplicate' as const), at: fc.nat() }),
  fc.record({ op: fc.constant('swap' as const), at: fc.nat(), with: fc.nat() }),
  fc.record({ op: fc.constant('indent' as const), at: fc.nat(), by: fc.constantFrom(' ', '  ', '   ', '\t', '-') }),
  { weight: 3, arbitrary: fc.record({ op: fc.constant('insertToken' as const), at: fc.nat(), col: fc.nat(), token: fc.oneof(fc.constantFrom(...YAML_TOKENS), fc.string({ maxLength: 4 })) }) },
  fc.record({ op: fc.constant('insertLine' as const), at: fc.nat(), line: fc.oneof(fc.constantFrom(...YAML_TOKENS), fc.string({ maxLength: 30 })) }),
  fc.record({ op: fc.constant('deleteChars' as const), at: fc.nat(), col: fc.nat(), len: fc.integer({ min: 1, max: 6 }) }),
  fc.record({ op: fc.constant('truncate' as const), at: fc.nat(), col: fc.nat() }),
);

function applyLineOp(lines: string[], o: LineOp): string[] {
  const out = [...lines];
  if (out.length === 0) out.push('');
  const i = o.at % out.length;
  const line = out[i]!;
  switch (o.op) {
    case 'delete':
      out.splice(i, 1);
      break;
    case 'duplicate':
      out.splice(i, 0, line);
      break;
    case 'swap': {
      const j = o.with % out.length;
      [out[i], out[j]] = [out[j]!, line];
      break;
    }
    case 'indent':
      out[i] = o.by + line;
      break;
    case 'insertToken': {
      const c = o.col % (line.length + 1);
      out[i] = line.slice(0, c) + o.token + line.slice(c);
      break;
    }
    case 'insertLine':
      out.splice(i, 0, o.line);
      break;
    case 'deleteChars': {
      const c = o.col % (line.length + 1);
      out[i] = line.slice(0, c) + line.slice(c + o.len);
      break;
    }
    case 'truncate':
      out.splice(i + 1);
      out[i] = line.slice(0, o.col % (line.length + 1));
      break;
  }
  return out;
}

/** One of `seeds` (texts) with 1 to `maxOps` line edits. */
export function mutatedText(seeds: readonly string[], maxOps = 3): fc.Arbitrary<string> {
  return fc.tuple(fc.nat(seeds.length - 1), fc.array(lineOp, { minLength: 1, maxLength: maxOps })).map(([i, ops]) => ops.reduce((ls, o) => applyLineOp(ls, o), seeds[i]!.split('\n')).join('\n'));
}
