// Label and field selectors as kube-apiserver parses them (k8s.io/apimachinery labels.Parse,
// fields.ParseSelector): =, ==, !=, in, notin, exists, !key, gt/lt; field labels per kind.
import { badRequest, type KubeObject } from './errors.js';
import type { ResourceKind } from './resources.js';

export type Matcher = (o: KubeObject) => boolean;

type Tok = { t: 'id' | 'op'; v: string };

function tokenize(s: string): Tok[] {
  const out: Tok[] = [];
  let i = 0;
  while (i < s.length) {
    const c = s[i]!;
    if (c === ' ' || c === '\t') { i++; continue; }
    const two = s.slice(i, i + 2);
    if (two === '!=' || two === '==') { out.push({ t: 'op', v: two }); i += 2; continue; }
    if ('=!(),<>'.includes(c)) { out.push({ t: 'op', v: c }); i++; continue; }
    let j = i;
    while (j < s.length && !' \t=!(),<>'.includes(s[j]!)) j++;
    out.push({ t: 'id', v: s.slice(i, j) });
    i = j;
  }
  return out;
}

/** Parses a labelSelector; a malformed one is the real server's 400. */
export function parseLabelSelector(sel: string): Matcher {
  const toks = tokenize(sel);
  const reqs: Matcher[] = [];
  let i = 0;
  const fail = (why: string): never => { throw badRequest(`unable to parse requirement: ${why}`); };
  const ident = (): string => {
    const t = toks[i++];
    if (!t || t.t !== 'id') fail(`found '${t?.v ?? ''}', expected: identifier`);
    return t!.v;
  };
  const labels = (o: KubeObject): Record<string, string> => o.metadata.labels ?? {};
  while (i < toks.length) {
    if (toks[i]!.v === '!' && toks[i]!.t === 'op') {
      i++;
      const k = ident();
      reqs.push((o) => !(k in labels(o)));
    } else {
      const k = ident();
      const op = toks[i];
      if (!op || (op.t === 'op' && op.v === ',')) {
        reqs.push((o) => k in labels(o));
      } else if (op.v === '=' || op.v === '==' || op.v === '!=') {
        i++;
        const v = toks[i]?.t === 'id' ? toks[i++]!.v : '';
        reqs.push(op.v === '!=' ? (o) => labels(o)[k] !== v : (o) => labels(o)[k] === v);
      } else if (op.v === '>' || op.v === '<') {
        i++;
        const n = Number(ident());
        if (!Number.isInteger(n)) fail(`for 'gt', 'lt' operators, the value must be an integer`);
        reqs.push((o) => { const l = labels(o)[k]; return l !== undefined && (op.v === '>' ? Number(l) > n : Number(l) < n); });
      } else if (op.t === 'id' && (op.v === 'in' || op.v === 'notin')) {
        i++;
        if (toks[i++]?.v !== '(') fail(`found '${toks[i - 1]?.v ?? ''}', expected: '('`);
        const vals = new Set<string>();
        while (toks[i] && toks[i]!.v !== ')') {
          if (toks[i]!.t === 'id') vals.add(toks[i]!.v);
          else if (toks[i]!.v !== ',') fail(`found '${toks[i]!.v}', expected: ',', ')' or identifier`);
          i++;
        }
        if (toks[i++]?.v !== ')') fail(`found '', expected: ')'`);
        reqs.push(op.v === 'in' ? (o) => vals.has(labels(o)[k] ?? '\0') : (o) => !vals.has(labels(o)[k] ?? '\0'));
      } else {
        fail(`found '${op.v}', expected: in, notin, =, ==, !=, gt, lt`);
      }
    }
    if (i < toks.length) {
      if (toks[i]!.v !== ',') fail(`found '${toks[i]!.v}', expected: ','`);
      i++;
    }
  }
  return (o) => reqs.every((r) => r(o));
}

function splitUnescaped(s: string, sep: string): string[] {
  const out: string[] = [];
  let cur = '';
  for (let i = 0; i < s.length; i++) {
    if (s[i] === '\\' && i + 1 < s.length) { cur += s[i]! + s[i + 1]!; i++; continue; }
    if (s[i] === sep) { out.push(cur); cur = ''; continue; }
    cur += s[i];
  }
  out.push(cur);
  return out;
}
const unescape = (s: string): string => s.replace(/\\(.)/g, '$1');

/** Parses a fieldSelector for one kind; a label the kind does not index is the real server's 400. */
export function parseFieldSelector(sel: string, r: ResourceKind): Matcher {
  const reqs: Matcher[] = [];
  for (const term of splitUnescaped(sel, ',')) {
    if (term.trim() === '') continue;
    const m = /^([^=!]+)(==|!=|=)(.*)$/s.exec(term);
    if (!m) throw badRequest(`invalid selector: '${sel}'; can't understand '${term}'`);
    const [, key, op, raw] = m as unknown as [string, string, string, string];
    const value = unescape(raw);
    const get: ((o: KubeObject) => string | undefined) | undefined =
      key === 'metadata.name' ? (o) => o.metadata.name
        : key === 'metadata.namespace' && r.namespaced ? (o) => o.metadata.namespace ?? ''
          : r.fields?.[key];
    if (!get) {
      throw badRequest(`Unable to find {"${r.group}" "${r.versions[0]}" "${r.plural}"} that match label selector "", field selector "${sel}": field label not supported: ${key}`);
    }
    reqs.push(op === '!=' ? (o) => get(o) !== value : (o) => get(o) === value);
  }
  return (o) => reqs.every((q) => q(o));
}
