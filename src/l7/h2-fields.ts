// Header fields between the engine's raw pairs and node:http2's header objects, for both sides
// of an HTTP/2 exchange (and its shadows).
import type { IncomingHttpHeaders, OutgoingHttpHeaders } from 'node:http2';

/** Connection-specific fields HTTP/2 forbids (RFC 9113 §8.2.2), and Host (it is :authority). */
const NOT_H2 = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade', 'host', 'http2-settings']);

/** Raw pairs (pseudo-headers left out, forbidden fields dropped) as node:http2 header object fields. */
export function toH2(pairs: readonly string[], into: OutgoingHttpHeaders): OutgoingHttpHeaders {
  for (let i = 0; i < pairs.length; i += 2) {
    const name = pairs[i]!.toLowerCase();
    const value = pairs[i + 1]!;
    if (name.startsWith(':') || NOT_H2.has(name)) continue;
    if (name === 'te' && value.trim().toLowerCase() !== 'trailers') continue;
    const prev = into[name];
    into[name] = prev === undefined ? value : Array.isArray(prev) ? [...prev, value] : [String(prev), value];
  }
  return into;
}

export function fromH2(h: IncomingHttpHeaders): string[] {
  const out: string[] = [];
  for (const [k, v] of Object.entries(h)) {
    if (k.startsWith(':') || v === undefined) continue;
    if (Array.isArray(v)) for (const x of v) out.push(k, x);
    else out.push(k, String(v));
  }
  return out;
}
