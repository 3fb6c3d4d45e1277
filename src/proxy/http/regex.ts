// Route regexes: RE2 patterns (what Envoy, Istio and Gateway API implementations evaluate) turned
// into anchored JS RegExps once per pattern, never per request.

/** Compiled patterns by source; `null`: a pattern JS cannot evaluate as RE2 would. */
const cache = new Map<string, RegExp | null>();
/** Patterns come from route config, which churns; past this many the cache starts over. */
const CACHE_MAX = 4096;

/** RE2's POSIX classes (`[[:alpha:]]`), which JS reads as a plain class of those letters. */
const POSIX: Readonly<Record<string, string>> = {
  alnum: '0-9A-Za-z',
  alpha: 'A-Za-z',
  ascii: '\\x00-\\x7F',
  blank: '\\t ',
  cntrl: '\\x00-\\x1F\\x7F',
  digit: '0-9',
  graph: '!-~',
  lower: 'a-z',
  print: ' -~',
  punct: '!-\\/:-@\\[-`{-~',
  space: '\\t\\n\\v\\f\\r ',
  upper: 'A-Z',
  word: '0-9A-Za-z_',
  xdigit: '0-9A-Fa-f',
};

/**
 * A RegExp that matches a whole string exactly when the RE2 `pattern` does (Envoy's `safe_regex`
 * is a full match), or `null` when the pattern uses what RE2 rejects (backreferences,
 * lookaround) or what JS cannot say. Callers treat `null` as "matches nothing": a route whose
 * regex cannot be honoured must not catch traffic meant for others.
 */
export function fullMatchRegex(pattern: string): RegExp | null {
  const hit = cache.get(pattern);
  if (hit !== undefined) return hit;
  const re = compile(pattern);
  if (cache.size >= CACHE_MAX) cache.clear();
  cache.set(pattern, re);
  return re;
}

function compile(pattern: string): RegExp | null {
  const t = translate(pattern);
  if (t === undefined) return null;
  const body = `^(?:${t.source})$`;
  // The `u` flag gives RE2's code-point semantics and \p{..}; it refuses escapes RE2 allows
  // (`\@`), so those patterns fall back to the legacy syntax, which reads them literally.
  try {
    return new RegExp(body, `${t.flags}u`);
  } catch {
    try {
      return new RegExp(body, t.flags);
    } catch {
      return null;
    }
  }
}

/** RE2 syntax → JS syntax, or undefined when the meaning cannot be kept. */
function translate(p: string): { source: string; flags: string } | undefined {
  let flags = '';
  let i = 0;
  const lead = /^\(\?([imsU]+)\)/.exec(p);
  if (lead) {
    if (lead[1]!.includes('U')) return undefined; // ungreedy has no JS form
    flags = [...new Set(lead[1]!)].join('');
    i = lead[0].length;
  }
  let out = '';
  let inClass = false;
  while (i < p.length) {
    const c = p[i]!;
    if (c === '\\') {
      const n = p[i + 1];
      if (n === undefined) return undefined;
      if (n >= '1' && n <= '9') return undefined; // a backreference
      if (n === 'Q') {
        // \Q...\E: everything between is literal.
        const end = p.indexOf('\\E', i + 2);
        const lit = p.slice(i + 2, end < 0 ? p.length : end);
        out += lit.replace(inClass ? /[\\\]^-]/g : /[\\^$.*+?()[\]{}|/]/g, '\\$&');
        i = end < 0 ? p.length : end + 2;
        continue;
      }
      if (!inClass && n === 'A') out += '^';
      else if (!inClass && n === 'z') out += '$';
      else if (!inClass && n === 'k') return undefined; // a named backreference in JS
      else if ((n === 'p' || n === 'P') && p[i + 2] !== '{' && p[i + 2] !== undefined) {
        // RE2's one-letter property (`\pL`); JS wants braces.
        out += `\\${n}{${p[i + 2]}}`;
        i += 3;
        continue;
      } else out += c + n;
      i += 2;
      continue;
    }
    if (inClass) {
      if (c === '[' && p[i + 1] === ':') {
        const end = p.indexOf(':]', i + 2);
        const name = end < 0 ? undefined : p.slice(i + 2, end);
        const neg = name?.startsWith('^');
        const cls = name === undefined ? undefined : POSIX[neg ? name.slice(1) : name];
        if (cls === undefined || neg) return undefined;
        out += cls;
        i = end + 2;
        continue;
      }
      if (c === ']') inClass = false;
      out += c === '[' ? '\\[' : c;
      i++;
      continue;
    }
    if (c === '[') {
      inClass = true;
      out += '[';
      i++;
      if (p[i] === '^') {
        out += '^';
        i++;
      }
      // RE2 reads a `]` first in a class as a literal; JS would close an empty class.
      if (p[i] === ']') {
        out += '\\]';
        i++;
      }
      continue;
    }
    if (c === '(' && p[i + 1] === '?') {
      const a = p[i + 2];
      const b = p[i + 3];
      if (a === '=' || a === '!' || (a === '<' && (b === '=' || b === '!'))) return undefined; // lookaround
      if (a === 'P' && b === '<') {
        out += '(?<';
        i += 4;
        continue;
      }
    }
    out += c;
    i++;
  }
  return inClass ? undefined : { source: out, flags };
}
