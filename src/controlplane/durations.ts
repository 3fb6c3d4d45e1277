// Duration strings of the routing APIs, as milliseconds: Gateway API's GEP-2257 form (`1h2m`,
// `500ms`) and Istio's (Go's time.ParseDuration syntax, which the Istio CRDs check with CEL).
import { fieldError, formatPath, str, type FieldPath } from '../k8s/index.js';

const GEP_2257 = /^([0-9]{1,5}(h|m|s|ms)){1,4}$/;
const UNIT_MS: Readonly<Record<string, number>> = { h: 3_600_000, m: 60_000, s: 1000, ms: 1, us: 0.001, 'µs': 0.001, 'μs': 0.001, ns: 0.000001 };

/**
 * A GEP-2257 Duration: one to four integer components, each with a unit of h, m, s or ms, summed
 * (units may repeat). `0s` is zero, which the timeout fields read as "no timeout".
 */
export function gatewayDuration(v: unknown, p: FieldPath): number | undefined {
  const s = str(v, p);
  if (s === undefined) return undefined;
  if (!GEP_2257.test(s)) throw fieldError(`${formatPath(p)}: ${JSON.stringify(s)} is not a Gateway API duration (e.g. 1s, 500ms, 1h30m)`, p);
  let ms = 0;
  for (const [, n, unit] of s.matchAll(/([0-9]+)(ms|h|m|s)/g)) ms += Number(n) * UNIT_MS[unit!]!;
  return ms;
}

/**
 * An Istio duration (Go syntax: `1.5s`, `300ms`, `1h2m`), which Istio's CRDs require to be at
 * least 1ms. Sub-millisecond remainders round up so a positive duration never becomes 0.
 */
export function istioDuration(v: unknown, p: FieldPath): number | undefined {
  const s = str(v, p);
  if (s === undefined) return undefined;
  const bad = () => fieldError(`${formatPath(p)}: ${JSON.stringify(s)} is not a duration of at least 1ms (e.g. 1s, 250ms, 1m30s)`, p);
  if (!/^(\d+(\.\d*)?|\.\d+)(h|m|s|ms|us|µs|μs|ns)((\d+(\.\d*)?|\.\d+)(h|m|s|ms|us|µs|μs|ns))*$/.test(s)) throw bad();
  let ms = 0;
  for (const [, n, unit] of s.matchAll(/(\d+(?:\.\d*)?|\.\d+)(ms|us|µs|μs|ns|h|m|s)/g)) ms += Number(n) * UNIT_MS[unit!]!;
  if (ms < 1) throw bad();
  return Math.ceil(ms);
}
