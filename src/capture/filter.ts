// Capture filters: parsed once from the CLI's flags or the endpoint's query string (the same
// names), then matched against every record and every plaintext stream. Filters are ANDed.
import { UsageError } from '../errors.js';
import { cidrContains, isIp, normalizedIpBytes, parseCidr, type Cidr } from '../net/index.js';
import { VERDICTS, type CaptureEnd, type CaptureRecord, type Verdict } from './record.js';

/** One end selector of --from/--to: a pod `ns/name`, an IP, or a CIDR. */
export type EndSelector = { pod: string } | { cidr: Cidr };

export interface CaptureFilter {
  pod?: string;
  namespace?: string;
  from?: EndSelector;
  to?: EndSelector;
  port?: number;
  verdict?: ReadonlySet<Verdict>;
  protocol?: 'tcp' | 'http';
  /** Replay records that started at most this long ago (ms) before streaming live ones. */
  sinceMs?: number;
}

/** The filter names, as query parameters (`?pod=…`) and as CLI flags (`--pod …`). */
export const FILTER_NAMES = ['pod', 'namespace', 'from', 'to', 'port', 'verdict', 'protocol', 'since'] as const;
export type FilterName = (typeof FILTER_NAMES)[number];

const NAME = /^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/;

function bad(flag: string, value: string, want: string): UsageError {
  return new UsageError(`--${flag}: ${JSON.stringify(value)} is not ${want}`);
}

function podName(flag: string, v: string): string {
  const [ns, name, extra] = v.split('/');
  if (extra !== undefined || !ns || !name || !NAME.test(ns) || !NAME.test(name)) throw bad(flag, v, 'a pod as namespace/name');
  return v;
}

function endSelector(flag: string, v: string): EndSelector {
  if (isIp(v)) return { cidr: parseCidr(v) };
  const slash = v.indexOf('/');
  if (slash > 0 && isIp(v.slice(0, slash))) {
    try {
      return { cidr: parseCidr(v) };
    } catch {
      throw bad(flag, v, 'a CIDR (a.b.c.d/len)');
    }
  }
  if (slash > 0) return { pod: podName(flag, v) };
  throw bad(flag, v, 'a pod (namespace/name), an IP or a CIDR');
}

/** `90s`, `5m`, `2h`, `1h30m`, `500ms` → milliseconds. */
export function parseDuration(flag: string, v: string): number {
  const units: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };
  let total = 0;
  let rest = v;
  if (!rest) throw bad(flag, v, 'a duration like 30s, 5m or 1h');
  while (rest) {
    const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)/.exec(rest);
    if (!m) throw bad(flag, v, 'a duration like 30s, 5m or 1h');
    total += Number(m[1]) * units[m[2]!]!;
    rest = rest.slice(m[0].length);
  }
  return total;
}

/** Parses filter values by name (missing or empty: no filter); throws UsageError naming the flag. */
export function parseFilter(values: Partial<Record<FilterName, string | undefined>>): CaptureFilter {
  const f: CaptureFilter = {};
  const v = (k: FilterName): string | undefined => (values[k] === undefined || values[k] === '' ? undefined : values[k]);
  if (v('pod')) f.pod = podName('pod', v('pod')!);
  if (v('namespace')) {
    if (!NAME.test(v('namespace')!)) throw bad('namespace', v('namespace')!, 'a namespace name');
    f.namespace = v('namespace')!;
  }
  if (v('from')) f.from = endSelector('from', v('from')!);
  if (v('to')) f.to = endSelector('to', v('to')!);
  if (v('port')) {
    const p = v('port')!;
    if (!/^\d{1,5}$/.test(p) || Number(p) < 1 || Number(p) > 65535) throw bad('port', p, 'a port (1-65535)');
    f.port = Number(p);
  }
  if (v('verdict')) {
    const set = new Set<Verdict>();
    for (const w of v('verdict')!.split(',')) {
      if (!(VERDICTS as readonly string[]).includes(w)) throw bad('verdict', w, `a verdict (${VERDICTS.join(', ')})`);
      set.add(w as Verdict);
    }
    f.verdict = set;
  }
  if (v('protocol')) {
    const p = v('protocol')!;
    if (p !== 'tcp' && p !== 'http') throw bad('protocol', p, 'tcp or http');
    f.protocol = p;
  }
  if (v('since')) f.sinceMs = parseDuration('since', v('since')!);
  return f;
}

/** The filter as query parameters again (for the endpoint URL and the capture log line). */
export function filterParams(values: Partial<Record<FilterName, string | undefined>>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const k of FILTER_NAMES) if (values[k] !== undefined && values[k] !== '') out[k] = values[k]!;
  return out;
}

function ipIn(c: Cidr, ip: string | undefined): boolean {
  if (!ip || !isIp(ip)) return false;
  return cidrContains(c, normalizedIpBytes(ip));
}

function endMatches(sel: EndSelector, e: CaptureEnd, alsoIp?: string): boolean {
  if ('pod' in sel) return e.pod === sel.pod;
  return ipIn(sel.cidr, e.ip) || ipIn(sel.cidr, alsoIp);
}

function nsOf(pod: string | undefined): string | undefined {
  return pod?.split('/')[0];
}

function split(addr: string | undefined): { ip?: string; port?: number } {
  if (!addr) return {};
  const i = addr.lastIndexOf(':');
  return i < 0 ? {} : { ip: addr.slice(0, i), port: Number(addr.slice(i + 1)) };
}

/**
 * Whether a record passes the filter. `--to` and `--port` match the destination or the
 * address the app dialed (a Service VIP); `--pod` and `--namespace` match either end.
 */
export function matches(f: CaptureFilter, r: Pick<CaptureRecord, 'src' | 'dst' | 'originalDst' | 'verdict' | 'protocol'>): boolean {
  const orig = split(r.originalDst);
  if (f.pod !== undefined && r.src.pod !== f.pod && r.dst.pod !== f.pod) return false;
  if (f.namespace !== undefined && nsOf(r.src.pod) !== f.namespace && nsOf(r.dst.pod) !== f.namespace) return false;
  if (f.from && !endMatches(f.from, r.src)) return false;
  if (f.to && !endMatches(f.to, r.dst, orig.ip)) return false;
  if (f.port !== undefined && r.dst.port !== f.port && orig.port !== f.port) return false;
  if (f.verdict && !f.verdict.has(r.verdict)) return false;
  if (f.protocol && r.protocol !== f.protocol) return false;
  return true;
}
