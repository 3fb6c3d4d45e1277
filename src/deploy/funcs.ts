// The template functions the chart uses, with helm's and Sprig's meaning: include, toYaml
// (keys sorted, as helm's sigs.k8s.io/yaml does), indent/nindent, quote, default, required,
// fail, b64enc, printf, add and the comparisons. A function the chart does not use is not here.
import { stringify } from 'yaml';
import { ConfigError } from '../errors.js';
import { truthy, type Renderer, type TemplateFunc } from './template.js';

const str = (v: unknown): string => (v === undefined || v === null ? '' : typeof v === 'string' ? v : typeof v === 'object' ? JSON.stringify(v) : String(v));

/** Sprig's indent: every line, empty ones too, gets `n` spaces. */
const indent = (n: unknown, s: unknown): string => {
  const pad = ' '.repeat(Number(n));
  return pad + str(s).replaceAll('\n', '\n' + pad);
};

/** helm's toYaml: sorted keys, block style, no trailing newline; nil is "null". */
export function toYaml(v: unknown): string {
  if (v === undefined) return 'null';
  return stringify(v, { sortMapEntries: true, lineWidth: 0, indentSeq: true }).replace(/\n$/, '');
}

/** Go's fmt verbs the chart uses: %s %d %v %q and %%. */
function printf(format: unknown, ...args: unknown[]): string {
  let i = 0;
  return str(format).replace(/%[sdvq%]/g, (verb) => {
    if (verb === '%%') return '%';
    if (i >= args.length) return `%!${verb[1]}(MISSING)`;
    const a = args[i++];
    return verb === '%q' ? JSON.stringify(str(a)) : str(a);
  });
}

function compare(a: unknown, b: unknown, op: string): boolean {
  if (typeof a !== typeof b) throw new Error(`incompatible types for comparison: ${typeof a} ${op} ${typeof b}`);
  return op === 'lt' ? (a as number) < (b as number) : op === 'le' ? (a as number) <= (b as number) : op === 'gt' ? (a as number) > (b as number) : (a as number) >= (b as number);
}

function firstOr(xs: unknown[], pick: (x: unknown) => boolean): unknown {
  const i = xs.findIndex(pick);
  return i >= 0 ? xs[i] : xs.at(-1);
}

/** The function map for a Renderer (include needs the renderer itself). */
export function chartFuncs(r: Renderer): Record<string, TemplateFunc> {
  return {
    include: (name, dot) => r.include(str(name), dot),
    toYaml,
    toJson: (v) => JSON.stringify(v ?? null),
    indent,
    nindent: (n, s) => '\n' + indent(n, s),
    quote: (...xs) => xs.filter((x) => x !== undefined && x !== null).map((x) => JSON.stringify(str(x))).join(' '),
    squote: (...xs) => xs.filter((x) => x !== undefined && x !== null).map((x) => `'${str(x)}'`).join(' '),
    default: (d, ...v) => (v.length && truthy(v[0]) ? v[0] : d),
    empty: (v) => !truthy(v),
    required: (msg, v) => {
      if (v === undefined || v === null || v === '') throw new ConfigError('NM_ERR_CHART', str(msg));
      return v;
    },
    fail: (msg) => {
      throw new ConfigError('NM_ERR_CHART', str(msg));
    },
    b64enc: (s) => Buffer.from(str(s)).toString('base64'),
    printf: (f, ...args) => printf(f, ...args),
    toString: (v: unknown) => str(v),
    int: (v) => Math.trunc(Number(v ?? 0)),
    add: (...xs) => xs.reduce<number>((a, x) => a + Number(x), 0),
    trunc: (n, s) => str(s).slice(0, Number(n)),
    trimSuffix: (suf, s) => (str(s).endsWith(str(suf)) ? str(s).slice(0, -str(suf).length || undefined) : str(s)),
    lower: (s) => str(s).toLowerCase(),
    eq: (a, ...bs) => bs.some((b) => a === b),
    ne: (a, b) => a !== b,
    lt: (a, b) => compare(a, b, 'lt'),
    le: (a, b) => compare(a, b, 'le'),
    gt: (a, b) => compare(a, b, 'gt'),
    ge: (a, b) => compare(a, b, 'ge'),
    not: (v) => !truthy(v),
    // Go: the first empty argument (and) or the first non-empty one (or), else the last.
    and: (...xs) => firstOr(xs, (x) => !truthy(x)),
    or: (...xs) => firstOr(xs, truthy),
    list: (...xs) => xs,
    dict: (...kv) => Object.fromEntries(Array.from({ length: Math.floor(kv.length / 2) }, (_, i) => [str(kv[2 * i]), kv[2 * i + 1]])),
  };
}
