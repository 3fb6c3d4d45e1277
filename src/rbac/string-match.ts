// Istio's four string forms (exact, `x*` prefix, `*x` suffix, `*` presence) as the matchers
// of L4 and L7 authorization compare them.
import type { StringMatch } from '../state/index.js';

/** Presence is "any non-empty value", so a missing identity ("") never matches `*`. */
export function stringMatches(m: StringMatch, value: string): boolean {
  if ('exact' in m) return value === m.exact;
  if ('prefix' in m) return value.startsWith(m.prefix);
  if ('suffix' in m) return value.endsWith(m.suffix);
  return value.length > 0;
}
