// Fuzz: xDS resources through the agent's real decoder and typed handlers (xds/handlers.ts:
// decodeAny, addressFromProto, authorizationFromProto) into the one updater (ProxyState.update),
// as XdsClient applies a DeltaDiscoveryResponse. Inputs are valid Address/Authorization messages,
// the same structurally mutated, their bytes mutated, and noise. A bad resource is rejected (the
// NACK) and stands rejected in the store (so it denies), and its last good version stays: the
// very same object, unchanged. Whatever is accepted passes an independent validity check.
import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import { ProxyState } from '../../src/state/index.js';
import { handleAddresses, handleAuthorizations, type Rejection, type ResourceHandler, type ResourceUpdate } from '../../src/xds/handlers.js';
import { TYPE_ADDRESS, TYPE_AUTHORIZATION } from '../../src/xds/index.js';
import { fuzzBudget, fuzzParams, progress, watchProcess } from '../helpers/fuzz.js';
import { BASELINE, held, responseArb, violations, type FuzzResponse } from '../helpers/xds-fuzz.js';

const HANDLERS: ReadonlyMap<string, ResourceHandler> = new Map([
  [TYPE_ADDRESS, handleAddresses],
  [TYPE_AUTHORIZATION, handleAuthorizations],
]);

/** Applies a response the way XdsClient does; returns the rejections (the NACK), or null for an unknown type. */
function apply(state: ProxyState, res: FuzzResponse): Rejection[] | null {
  const handler = HANDLERS.get(res.typeUrl);
  if (!handler) return null; // XdsClient NACKs the whole response and touches nothing
  const updates: ResourceUpdate[] = [];
  const rejected: Rejection[] = [];
  for (const r of res.resources) {
    if (!r.name) rejected.push({ name: '(unnamed)', reason: 'resource has no name' });
    else updates.push({ name: r.name, version: r.version, resource: { type_url: r.typeUrl, value: r.value } });
  }
  state.update((u) => rejected.push(...handler(u, updates, res.removed)));
  return rejected;
}

function baselineState(): ProxyState {
  const state = new ProxyState();
  for (const t of HANDLERS.keys()) {
    const rejected = apply(state, { typeUrl: t, resources: BASELINE.filter((b) => b.typeUrl === t).map((b) => ({ name: b.name, version: '1', typeUrl: b.typeUrl, value: b.bytes })), removed: [] });
    if (rejected?.length) throw new Error(`the baseline itself was rejected: ${JSON.stringify(rejected)}`);
  }
  return state;
}

const stats = { cases: 0, accepted: 0, rejected: 0, internal: 0, unknownType: 0 };
afterAll(() => {
  if (stats.cases >= 10_000) process.stderr.write(`fuzz xds-handlers: ${JSON.stringify(stats)}\n`);
});

describe('fuzz: xDS resources through the client handlers and ProxyState', () => {
  const budget = fuzzBudget(20);
  it(
    `rejects every bad resource without a throw and keeps the last good state (${budget.runs} cases)`,
    () => {
      const watch = watchProcess();
      const tick = progress('xds-handlers', budget.runs);
      try {
        fc.assert(
          fc.property(responseArb, (res) => {
            tick();
            stats.cases++;
            const state = baselineState();
            const before = new Map(BASELINE.map((b) => [b.name, held(state, b.name)]));
            const text = new Map([...before].map(([k, v]) => [k, JSON.stringify(v)]));

            const rejected = apply(state, res); // a throw here fails the case: it would reach the agent
            watch.check();

            const sent = new Set(res.resources.map((r) => r.name));
            const bad = new Set((rejected ?? []).map((r) => r.name));
            if (rejected === null) stats.unknownType++;
            for (const r of rejected ?? []) {
              expect(r.reason, `rejection of ${r.name}`).toEqual(expect.any(String));
              expect(r.reason.length).toBeGreaterThan(0);
              if (r.reason.startsWith('internal error')) stats.internal++;
            }
            // Nothing invalid got in, whatever was accepted.
            expect(violations(state)).toEqual([]);
            for (const r of res.resources) {
              if (!r.name) continue;
              if (rejected === null || bad.has(r.name)) continue;
              // Applied, then removed by the same response (XdsClient applies removals last).
              if (res.removed.includes(r.name)) {
                expect(held(state, r.name), `removed ${r.name}`).toBeUndefined();
                continue;
              }
              stats.accepted++;
              // Accepted: held under exactly the name it was sent with, and of the response's type.
              const h = held(state, r.name);
              expect(h, `accepted ${r.name}`).toBeDefined();
              if (res.typeUrl === TYPE_AUTHORIZATION) expect(state.policy(r.name)).toBe(h);
              else expect(state.policy(r.name) === h).toBe(false);
            }
            stats.rejected += bad.size;
            // A rejected resource stands rejected (it denies) until a good version or a removal;
            // an accepted one does not.
            const standing = new Set(state.rejected().map((r) => r.name));
            for (const r of res.resources) {
              if (!r.name || rejected === null || res.removed.includes(r.name)) continue;
              expect(standing.has(r.name), `${r.name} ${bad.has(r.name) ? 'stands' : 'does not stand'} rejected`).toBe(bad.has(r.name));
            }
            // The last good state: every baseline resource not validly replaced is the very
            // same object, unmodified in place.
            for (const [name, obj] of before) {
              const replaced = rejected !== null && sent.has(name) && !bad.has(name);
              if (replaced) continue;
              expect(held(state, name), `baseline ${name} after ${bad.has(name) ? 'a rejected update' : 'an update of others'}`).toBe(obj);
              expect(JSON.stringify(held(state, name))).toBe(text.get(name));
            }
          }),
          fuzzParams(budget),
        );
      } finally {
        watch.dispose();
      }
      // The positive twin: the generator produced accepted and rejected resources both.
      expect(stats.accepted).toBeGreaterThan(0);
      expect(stats.rejected).toBeGreaterThan(0);
    },
    budget.testTimeoutMs,
  );
});
