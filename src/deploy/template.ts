// A Go text/template interpreter for the subset the nodemesh chart uses (helm's templates are
// Go templates): actions with {{- -}} trimming, comments, pipelines, fields, variables,
// if/else if/else, with, range, define/template, and functions from funcs.ts. No helm binary
// can be installed here, so this renders deploy/helm/nodemesh the way `helm template` does.
import { ConfigError } from '../errors.js';

/** A template function: receives its evaluated arguments (the piped value last, as in Go). */
export type TemplateFunc = (...args: unknown[]) => unknown;

type Node =
  | { t: 'text'; s: string }
  | { t: 'action'; pipe: Pipe; line: number }
  | { t: 'if' | 'with'; pipe: Pipe; body: Node[]; else: Node[]; line: number }
  | { t: 'range'; pipe: Pipe; body: Node[]; else: Node[]; line: number }
  | { t: 'template'; name: string; pipe: Pipe | undefined; line: number };

/** A pipeline, optionally declaring (`:=`) or assigning (`=`) variables. */
interface Pipe {
  decl: string[];
  assign: boolean;
  cmds: Operand[][];
}

type Operand =
  | { o: 'lit'; v: unknown }
  | { o: 'field'; base: 'dot' | 'var'; name?: string; path: string[] }
  | { o: 'ident'; name: string }
  | { o: 'sub'; pipe: Pipe; path: string[] };

const fail = (file: string, line: number, msg: string) => new ConfigError('NM_ERR_CHART', msg, { where: `${file}:${line}` });

/** Splits a template into text and `{{ }}` actions, applying the trim markers. */
function lex(src: string, file: string): { text: string; action?: string; line: number }[] {
  const out: { text: string; action?: string; line: number }[] = [];
  let i = 0;
  let trimNext = false;
  const lineAt = (k: number) => src.slice(0, k).split('\n').length;
  while (i <= src.length) {
    const open = src.indexOf('{{', i);
    let text = src.slice(i, open < 0 ? src.length : open);
    if (trimNext) text = text.replace(/^\s+/, '');
    if (open < 0) {
      out.push({ text, line: lineAt(i) });
      break;
    }
    let start = open + 2;
    if (src.startsWith('- ', start) || src.startsWith('-\n', start)) {
      text = text.replace(/\s+$/, '');
      start += 1;
    }
    const isComment = src.slice(start).trimStart().startsWith('/*');
    const close = isComment ? src.indexOf('*/', start) : -1;
    const end = src.indexOf('}}', isComment ? close : start);
    if (end < 0 || (isComment && close < 0)) throw fail(file, lineAt(open), 'unclosed action');
    let body = src.slice(start, end);
    trimNext = / -$/.test(body) || /\n-$/.test(body);
    if (trimNext) body = body.slice(0, -1);
    out.push({ text, action: isComment ? '' : body.trim(), line: lineAt(open) });
    i = end + 2;
  }
  return out;
}

/** Tokens of one action: strings, numbers, fields, variables, identifiers, punctuation. */
function tokens(s: string, file: string, line: number): string[] {
  const re = /\s*("(?:[^"\\]|\\.)*"|`[^`]*`|:=|[()|=,]|\$[A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)*|\.(?:[A-Za-z0-9_]+(?:\.[A-Za-z0-9_]+)*)?|-?\d+(?:\.\d+)?|[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)*)\s*/y;
  const out: string[] = [];
  re.lastIndex = 0;
  while (re.lastIndex < s.length) {
    const at = re.lastIndex;
    const m = re.exec(s);
    if (!m) throw fail(file, line, `unexpected ${JSON.stringify(s.slice(at, at + 10))} in {{ ${s} }}`);
    out.push(m[1]!);
  }
  return out;
}

function parsePipe(toks: string[], file: string, line: number): Pipe {
  let k = 0;
  const decl: string[] = [];
  let assign = false;
  // `$a := …`, `$a, $b := …` (range) or `$a = …`.
  const look = toks.findIndex((t) => t === ':=' || t === '=');
  if (look > 0 && toks.slice(0, look).every((t, i) => (i % 2 === 0 ? /^\$[A-Za-z0-9_]*$/.test(t) : t === ','))) {
    for (let i = 0; i < look; i += 2) decl.push(toks[i]!);
    assign = toks[look] === '=';
    k = look + 1;
  }
  const operand = (): Operand => {
    const t = toks[k++];
    if (t === undefined) throw fail(file, line, 'missing value in pipeline');
    if (t === '(') {
      let depth = 1;
      const from = k;
      while (k < toks.length && depth > 0) {
        if (toks[k] === '(') depth++;
        else if (toks[k] === ')') depth--;
        k++;
      }
      if (depth !== 0) throw fail(file, line, 'unclosed (');
      return { o: 'sub', pipe: parsePipe(toks.slice(from, k - 1), file, line), path: [] };
    }
    if (t.startsWith('"')) return { o: 'lit', v: JSON.parse(t) as string };
    if (t.startsWith('`')) return { o: 'lit', v: t.slice(1, -1) };
    if (/^-?\d/.test(t)) return { o: 'lit', v: Number(t) };
    if (t === 'true' || t === 'false') return { o: 'lit', v: t === 'true' };
    if (t === 'nil') return { o: 'lit', v: null };
    if (t.startsWith('.')) return { o: 'field', base: 'dot', path: t === '.' ? [] : t.slice(1).split('.') };
    if (t.startsWith('$')) {
      const [name, ...path] = t.split('.');
      return { o: 'field', base: 'var', name: name!, path };
    }
    if (/^[A-Za-z_]/.test(t) && !t.includes('.')) return { o: 'ident', name: t };
    throw fail(file, line, `unexpected ${t}`);
  };
  const cmds: Operand[][] = [[]];
  while (k < toks.length) {
    if (toks[k] === '|') {
      k++;
      cmds.push([]);
      continue;
    }
    cmds.at(-1)!.push(operand());
  }
  if (cmds.some((c) => c.length === 0)) throw fail(file, line, 'empty command in pipeline');
  return { decl, assign, cmds };
}

/** Parses a template file, adding its `define`d templates to `defs`. */
export function parseTemplate(src: string, file: string, defs: Map<string, Node[]>): Node[] {
  const parts = lex(src, file);
  let p = 0;
  /** An if/with/range whose header is parsed: its body, its else (or else-if chain), through its {{end}}. */
  const control = (kw: 'if' | 'with' | 'range', header: string, line: number): Node => {
    const pipe = parsePipe(tokens(header, file, line), file, line);
    const b = block(false);
    let otherwise: Node[] = [];
    if (b.stop?.startsWith('else')) {
      const rest = b.stop.slice(4).trim();
      const chained = /^(if|with)\s/.exec(rest);
      if (chained) {
        // `{{else if x}}` is an else holding an if that shares this {{end}}.
        otherwise = [control(chained[1] as 'if' | 'with', rest.slice(chained[1]!.length).trim(), b.line)];
      } else {
        const e = block(false);
        if (e.stop !== 'end') throw fail(file, e.line, `{{${kw}}} at line ${line} is missing its {{end}}`);
        otherwise = e.nodes;
      }
    } else if (b.stop !== 'end') {
      throw fail(file, line, `{{${kw}}} is missing its {{end}}`);
    }
    return { t: kw, pipe, body: b.nodes, else: otherwise, line } as Node;
  };
  /** Parses nodes until an {{end}} or {{else…}} (returned), or the end of input (top level only). */
  const block = (top: boolean): { nodes: Node[]; stop?: string; line: number } => {
    const nodes: Node[] = [];
    while (p < parts.length) {
      const part = parts[p++]!;
      if (part.text) nodes.push({ t: 'text', s: part.text });
      const { action, line } = part;
      if (action === undefined || action === '') continue;
      const kw = action.split(/\s+/)[0]!;
      const rest = action.slice(kw.length).trim();
      if (kw === 'end' || kw === 'else') return { nodes, stop: action, line };
      if (kw === 'if' || kw === 'with' || kw === 'range') {
        nodes.push(control(kw, rest, line));
      } else if (kw === 'define') {
        const name = JSON.parse(rest) as string;
        const b = block(false);
        if (b.stop !== 'end') throw fail(file, line, `{{define ${rest}}} is missing its {{end}}`);
        defs.set(name, b.nodes);
      } else if (kw === 'template') {
        const toks = tokens(rest, file, line);
        nodes.push({ t: 'template', name: JSON.parse(toks[0]!) as string, pipe: toks.length > 1 ? parsePipe(toks.slice(1), file, line) : undefined, line });
      } else {
        nodes.push({ t: 'action', pipe: parsePipe(tokens(action, file, line), file, line), line });
      }
    }
    if (!top) throw fail(file, parts.at(-1)?.line ?? 1, 'unexpected end of template: an {{end}} is missing');
    return { nodes, line: 0 };
  };
  const b = block(true);
  if (b.stop !== undefined) throw fail(file, b.line, `unexpected {{${b.stop}}}`);
  return b.nodes;
}

/** Go's truth: false, 0, nil, "" and empty lists and maps are false. */
export function truthy(v: unknown): boolean {
  if (v === undefined || v === null || v === false || v === 0 || v === '') return false;
  if (Array.isArray(v)) return v.length > 0;
  if (typeof v === 'object') return Object.keys(v).length > 0;
  return true;
}

const isMap = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** Prints a value as Go's fmt %v does for the scalars a chart prints; helm prints nil as "". */
export function printValue(v: unknown, file: string, line: number): string {
  if (v === undefined || v === null) return '';
  if (typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean') return String(v);
  throw fail(file, line, 'cannot print a list or a map; pipe it to toYaml');
}

interface Scope {
  dot: unknown;
  vars: Map<string, unknown>[];
}

/** Renders parsed templates; `include` and `template` find `define`d ones by name. */
export class Renderer {
  readonly defs = new Map<string, Node[]>();
  readonly #funcs: Record<string, TemplateFunc>;
  #depth = 0;

  constructor(funcs: (r: Renderer) => Record<string, TemplateFunc>) {
    this.#funcs = funcs(this);
  }

  /** Renders the template `name` (a define) with `dot` as its data. */
  include(name: string, dot: unknown, file = name, line = 0): string {
    const nodes = this.defs.get(name);
    if (!nodes) throw fail(file, line, `no template "${name}" is defined`);
    if (++this.#depth > 100) throw fail(file, line, `template "${name}" includes itself without end`);
    try {
      return this.run(nodes, dot, file);
    } finally {
      this.#depth--;
    }
  }

  /** Renders `nodes` with `dot` as both `.` and `$`. */
  run(nodes: Node[], dot: unknown, file: string): string {
    return this.#nodes(nodes, { dot, vars: [new Map([['$', dot]])] }, file);
  }

  #nodes(nodes: Node[], s: Scope, file: string): string {
    let out = '';
    for (const n of nodes) out += this.#node(n, s, file);
    return out;
  }

  #node(n: Node, s: Scope, file: string): string {
    switch (n.t) {
      case 'text':
        return n.s;
      case 'action': {
        const v = this.#pipe(n.pipe, s, file, n.line);
        return n.pipe.decl.length ? '' : printValue(v, file, n.line);
      }
      case 'if':
      case 'with': {
        const v = this.#pipe(n.pipe, s, file, n.line);
        const inner: Scope = { dot: n.t === 'with' ? v : s.dot, vars: [...s.vars, new Map()] };
        return truthy(v) ? this.#nodes(n.body, inner, file) : this.#nodes(n.else, { ...s, vars: [...s.vars, new Map()] }, file);
      }
      case 'range': {
        const { decl, cmds } = n.pipe;
        const v = this.#pipe({ decl: [], assign: false, cmds }, s, file, n.line);
        const entries: [unknown, unknown][] = Array.isArray(v)
          ? v.map((x, i) => [i, x])
          : isMap(v)
            ? Object.keys(v).sort().map((k) => [k, v[k]])
            : v === undefined || v === null
              ? []
              : (() => {
                  throw fail(file, n.line, 'range over something that is not a list or a map');
                })();
        if (entries.length === 0) return this.#nodes(n.else, { ...s, vars: [...s.vars, new Map()] }, file);
        let out = '';
        for (const [k, x] of entries) {
          const frame = new Map<string, unknown>();
          if (decl.length === 1) frame.set(decl[0]!, x);
          if (decl.length === 2) {
            frame.set(decl[0]!, k);
            frame.set(decl[1]!, x);
          }
          out += this.#nodes(n.body, { dot: x, vars: [...s.vars, frame] }, file);
        }
        return out;
      }
      case 'template':
        return this.include(n.name, n.pipe ? this.#pipe(n.pipe, s, file, n.line) : undefined, file, n.line);
    }
  }

  #pipe(p: Pipe, s: Scope, file: string, line: number): unknown {
    let v: unknown;
    let first = true;
    for (const cmd of p.cmds) {
      v = this.#cmd(cmd, s, file, line, first ? [] : [v]);
      first = false;
    }
    if (p.decl.length === 1) {
      const name = p.decl[0]!;
      if (p.assign) {
        const frame = [...s.vars].reverse().find((f) => f.has(name));
        if (!frame) throw fail(file, line, `undefined variable ${name}`);
        frame.set(name, v);
      } else {
        s.vars.at(-1)!.set(name, v);
      }
    }
    return v;
  }

  #cmd(cmd: Operand[], s: Scope, file: string, line: number, piped: unknown[]): unknown {
    const head = cmd[0]!;
    if (head.o === 'ident') {
      const f = this.#funcs[head.name];
      if (!f) throw fail(file, line, `function "${head.name}" not defined`);
      const args = [...cmd.slice(1).map((o) => this.#operand(o, s, file, line)), ...piped];
      try {
        return f(...args);
      } catch (e) {
        // required/fail say what is wrong, a template error already says where; add where.
        if (e instanceof ConfigError) throw e.where ? e : fail(file, line, e.message);
        throw fail(file, line, `${head.name}: ${(e as Error).message}`);
      }
    }
    if (cmd.length > 1 || piped.length > 0) throw fail(file, line, `${JSON.stringify(head)} is not a function, so it takes no arguments`);
    return this.#operand(head, s, file, line);
  }

  #operand(o: Operand, s: Scope, file: string, line: number): unknown {
    switch (o.o) {
      case 'lit':
        return o.v;
      case 'ident':
        return this.#cmd([o], s, file, line, []);
      case 'sub':
        return this.#walk(this.#pipe(o.pipe, s, file, line), o.path, file, line, '(…)');
      case 'field': {
        let base: unknown = s.dot;
        if (o.base === 'var') {
          const frame = [...s.vars].reverse().find((f) => f.has(o.name!));
          if (!frame) throw fail(file, line, `undefined variable ${o.name}`);
          base = frame.get(o.name!);
        }
        return this.#walk(base, o.path, file, line, o.base === 'var' ? o.name! : '');
      }
    }
  }

  /** `.a.b.c`: a missing key is nil, but a field of nil is an error (as helm reports it). */
  #walk(v: unknown, path: string[], file: string, line: number, from: string): unknown {
    let cur = v;
    let at = from;
    for (const k of path) {
      if (cur === undefined || cur === null) throw fail(file, line, `nil pointer evaluating ${at || '.'}.${k}`);
      if (!isMap(cur)) throw fail(file, line, `can't evaluate field ${k} in ${at || '.'}: not a map`);
      cur = cur[k];
      at = `${at}.${k}`;
    }
    return cur;
  }
}
