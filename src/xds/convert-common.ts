// What the xDS converters share: the error that names the offending field, enums, the values
// both the L4 and L7 messages carry (StringMatch, CIDRs, label maps), and header syntax.
import { XdsError } from '../errors.js';
import { cidr, type Cidr } from '../net/index.js';
import type { StringMatch } from '../state/index.js';
import type { PbCidr, PbStringMatch } from './proto.js';

/** Rejects the resource, naming the field (a proto field path, e.g. `rules[0].backends[1].weight`). */
export function bad(field: string, reason: string): never {
  throw new XdsError('NM_ERR_XDS_RESOURCE', `${field}: ${reason}`);
}

export function enumValue<T extends string>(allowed: ReadonlySet<string>, v: unknown, field: string): T {
  if (typeof v !== 'string' || !allowed.has(v)) bad(field, `unknown enum value ${JSON.stringify(v)}`);
  return v as T;
}

/** A proto enum name → the state's name, both ways; an unset (or unknown) value is rejected. */
export class EnumMap<S extends string, P extends string> {
  readonly #fromProto: ReadonlyMap<string, S>;
  constructor(readonly toProto: Readonly<Record<S, P>>) {
    this.#fromProto = new Map(Object.entries(toProto).map(([s, p]) => [p as string, s as S]));
  }
  fromProto(v: unknown, field: string): S {
    const s = typeof v === 'string' ? this.#fromProto.get(v) : undefined;
    if (s === undefined) bad(field, `unknown enum value ${JSON.stringify(v)}`);
    return s;
  }
}

/** An integer in [min, max]; decoded uint64 fields arrive as numbers and must stay exact. */
export function int(v: unknown, field: string, min: number, max: number): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min || v > max) bad(field, `${String(v)} is not an integer ${min}-${max}`);
  return v;
}

export function percent(v: unknown, field: string): number {
  if (typeof v !== 'number' || !Number.isFinite(v) || v < 0 || v > 100) bad(field, `${String(v)} is not a percentage 0-100`);
  return v;
}

export function nonEmpty(v: unknown, field: string): string {
  if (typeof v !== 'string' || v === '') bad(field, 'is required');
  return v;
}

/** A Service key or policy name: `<namespace>/<name>`. */
export function namespacedName(v: unknown, field: string): string {
  if (typeof v !== 'string' || !/^[^/]+\/[^/]+$/.test(v)) bad(field, `${JSON.stringify(v)} is not "<namespace>/<name>"`);
  return v;
}

/** RFC 9110 field-name (a token). */
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
/** What Node accepts in a field value: no CR, LF or NUL (it throws on them while writing). */
const FIELD_VALUE = /^[\t\x20-\x7e\x80-\xff]*$/;

export function headerName(v: unknown, field: string): string {
  if (typeof v !== 'string' || !TOKEN.test(v)) bad(field, `${JSON.stringify(v)} is not a header name`);
  return v;
}

export function headerValue(v: unknown, field: string): string {
  if (typeof v !== 'string' || !FIELD_VALUE.test(v)) bad(field, 'a header value may not hold CR, LF or NUL');
  return v;
}

/** The method token, e.g. `GET`. */
export function methodName(v: unknown, field: string): string {
  if (typeof v !== 'string' || !TOKEN.test(v)) bad(field, `${JSON.stringify(v)} is not an HTTP method`);
  return v;
}

/**
 * A route regex is RE2 syntax (Envoy's and Gateway API's), which the proxy translates, and
 * whatever it cannot honour matches nothing there. JavaScript's parser would refuse valid RE2
 * (`(?i)`, `\Q..\E`, `(?P<n>..)`), so what is rejected here is what no dialect parses: a
 * trailing backslash, an unclosed class, unbalanced parentheses, a repetition of nothing.
 */
export function regex(v: string, field: string): string {
  const fail = (why: string): never => bad(field, `invalid regular expression ${JSON.stringify(v)}: ${why}`);
  if (/^[*+?]/.test(v)) fail('a repetition of nothing');
  let depth = 0;
  for (let i = 0; i < v.length; i++) {
    const c = v[i];
    if (c === '\\') {
      if (i + 1 >= v.length) fail('a trailing backslash');
      if (v[i + 1] === 'Q') {
        const end = v.indexOf('\\E', i + 2);
        i = end < 0 ? v.length : end + 1;
      } else i++;
    } else if (c === '[') {
      // RE2 reads a `]` first in a class (after `^`) as a literal.
      let j = i + 1;
      if (v[j] === '^') j++;
      if (v[j] === ']') j++;
      for (; j < v.length && v[j] !== ']'; j++) if (v[j] === '\\') j++;
      if (j >= v.length) fail('an unclosed [');
      i = j;
    } else if (c === '(') depth++;
    else if (c === ')' && --depth < 0) fail('a ) without its (');
  }
  if (depth > 0) fail('an unclosed (');
  return v;
}

export function labelsFromProto(m: Record<string, string> | null | undefined, field: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(m ?? {})) {
    if (k === '') bad(field, 'a label key is empty');
    out[k] = String(v);
  }
  return out;
}

export function stringMatchFromProto(m: PbStringMatch, field: string): StringMatch {
  // Decoded messages name the set member in matchType; plain objects only set the field.
  const kind = m.matchType ?? (m.exact !== undefined ? 'exact' : m.prefix !== undefined ? 'prefix' : m.suffix !== undefined ? 'suffix' : m.presence !== undefined ? 'presence' : undefined);
  switch (kind) {
    case 'exact':
      return { exact: m.exact ?? '' };
    case 'prefix':
      return { prefix: m.prefix ?? '' };
    case 'suffix':
      return { suffix: m.suffix ?? '' };
    case 'presence':
      return { presence: true };
    default:
      bad(field, 'StringMatch has no match type set');
  }
}

export function stringMatchToProto(m: StringMatch): PbStringMatch {
  if ('exact' in m) return { exact: m.exact };
  if ('prefix' in m) return { prefix: m.prefix };
  if ('suffix' in m) return { suffix: m.suffix };
  return { presence: {} };
}

export function cidrsFromProto(list: PbCidr[] | undefined, field: string): Cidr[] {
  return (list ?? []).map((c, i) => {
    try {
      return cidr(c.address, c.length);
    } catch (e) {
      bad(`${field}[${i}]`, (e as Error).message);
    }
  });
}

export function cidrToProto(c: Cidr): PbCidr {
  return { address: c.bytes, length: c.prefixLen };
}
