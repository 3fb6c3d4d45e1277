// Fuzz: whole DeltaDiscoveryResponse messages, well-formed and byte-mutated, sent over real
// gRPC and TLS to a live XdsClient feeding a ProxyState (the agent's xDS path end to end, with
// test/helpers/ads-peer.ts as the control plane). The client answers every decodable response
// with an ACK or a NACK, drops the stream (and reconnects, resuming from what it holds) on one
// it cannot decode, never throws, and keeps the last good state.
import fc from 'fast-check';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ProxyState } from '../../src/state/index.js';
import { codecs, TYPE_ADDRESS, TYPE_AUTHORIZATION, XdsClient, type PbDeltaRequest, type PbDeltaResponse } from '../../src/xds/index.js';
import { startAdsPeer, type AdsPeer } from '../helpers/ads-peer.js';
import { fuzzBudget, fuzzParams, progress, watchProcess, type ProcessWatch } from '../helpers/fuzz.js';
import { mutatedBytes } from '../helpers/mutate.js';
import { BASELINE, held, responseArb, violations, type FuzzResponse } from '../helpers/xds-fuzz.js';

const TYPES = [TYPE_ADDRESS, TYPE_AUTHORIZATION];
const log = pino({ level: 'silent' });

function encode(r: FuzzResponse, nonce: string): Buffer {
  const msg: PbDeltaResponse = {
    typeUrl: r.typeUrl,
    nonce,
    systemVersionInfo: '',
    resources: r.resources.map((x) => ({ name: x.name, version: x.version, resource: { type_url: x.typeUrl, value: x.value } })),
    removedResources: r.removed,
  };
  return codecs.deltaResponse.encode(msg);
}

/** Decodes as the client does: grpc-js hands it a Buffer (protobufjs reads Buffers more leniently). */
function tryDecode(b: Uint8Array): PbDeltaResponse | undefined {
  try {
    return codecs.deltaResponse.decode(Buffer.from(b));
  } catch {
    return undefined;
  }
}

/** A response as the client gets it: built from the generators, or the same with its bytes mutated. */
const wireArb: fc.Arbitrary<{ how: 'object' | 'mutated'; bytes: Uint8Array }> = fc.oneof(
  { weight: 3, arbitrary: fc.tuple(responseArb, fc.nat(1_000_000)).map(([r, n]) => ({ how: 'object' as const, bytes: encode(r, `n${n}`) })) },
  { weight: 2, arbitrary: fc.tuple(responseArb, fc.nat(1_000_000)).chain(([r, n]) => mutatedBytes([encode(r, `m${n}`)], 6).map((bytes) => ({ how: 'mutated' as const, bytes }))) },
);

let peer: AdsPeer;
let client: XdsClient;
const state = new ProxyState();
const nacked: string[][] = [];
let watch: ProcessWatch;

/** Subscriptions carry the node; ACKs and NACKs carry only the type, nonce and error. */
const isSubscription = (r: PbDeltaRequest) => Boolean(r.node?.id);

type Held = Record<string, Record<string, string>>;

/** The client's answer to what was just sent: its ACK/NACK, or 'closed' if it dropped the stream. */
async function answer(held: Held): Promise<PbDeltaRequest | 'closed'> {
  for (;;) {
    const r = await peer.next(10_000);
    if (r === 'timeout') throw new Error('the client neither answered the response nor closed the stream within 10 s');
    if (r === 'closed' || !isSubscription(r)) return r;
    // A new stream resumes from what the client held: every accepted resource at its version
    // (standing rejections may be listed too, at the version that was rejected).
    const irv = r.initialResourceVersions ?? {};
    for (const [name, version] of Object.entries(held[r.typeUrl] ?? {})) expect(irv[name], `resume version of ${name}`).toBe(version);
    // And nothing else: a name it resumes from is held, or stands rejected.
    const standing = new Set(state.rejected().map((x) => x.name));
    for (const name of Object.keys(irv)) expect(name in (held[r.typeUrl] ?? {}) || standing.has(name), `resumes from ${name}, which it neither holds nor stands rejected`).toBe(true);
  }
}

/** Names each type's responses carried since the last restore: what the restore removes. */
const seenNames = new Map<string, Set<string>>(TYPES.map((t) => [t, new Set<string>()]));

async function sendAndAnswer(bytes: Uint8Array): Promise<PbDeltaRequest | 'closed'> {
  if (!peer.open) expect(await peer.waitOpen(10_000), 'the client reconnects').toBe(true);
  const d = tryDecode(bytes);
  for (const r of d?.resources ?? []) if (r.name) seenNames.get(d!.typeUrl)?.add(r.name);
  // What a subscription on a new stream must resume from: what the client held before this response.
  const held: Held = Object.fromEntries(TYPES.map((t) => [t, Object.fromEntries(client.versions(t))]));
  peer.sendRaw(bytes);
  return answer(held);
}

/** Sends the baseline of every type again and removes whatever else the client holds. */
async function restoreBaseline(tag: string): Promise<void> {
  for (const t of TYPES) {
    // Everything but the baseline: what the client holds, and what it may hold a standing rejection of.
    const removed = [...new Set([...client.versions(t).keys(), ...seenNames.get(t)!])].filter((n) => !BASELINE.some((b) => b.typeUrl === t && b.name === n));
    const resources = BASELINE.filter((b) => b.typeUrl === t).map((b) => ({ name: b.name, version: '1', typeUrl: b.typeUrl, value: b.bytes }));
    const a = await sendAndAnswer(encode({ typeUrl: t, resources, removed }, `restore-${tag}-${t}`));
    expect(a, 'the baseline is ACKed').not.toBe('closed');
    expect((a as PbDeltaRequest).errorDetail ?? null, 'the baseline is ACKed').toBeNull();
    seenNames.get(t)!.clear();
  }
  expect(state.rejected(), 'no standing rejection after the baseline is restored').toEqual([]);
}

/** Whether the client holds exactly the baseline names and no rejection stands. */
function atBaseline(): boolean {
  if (state.rejected().length > 0) return false;
  return TYPES.every((t) => {
    const names = [...client.versions(t).keys()].sort();
    const want = BASELINE.filter((b) => b.typeUrl === t).map((b) => b.name).sort();
    return names.length === want.length && names.every((x, i) => x === want[i]);
  });
}

/** A case that failed half-way (fast-check then shrinks) may have left answers and state behind. */
async function settleBaseline(tag: string): Promise<void> {
  if (peer.drain() > 0 || !atBaseline()) {
    await new Promise((r) => setTimeout(r, 50));
    peer.drain();
    await restoreBaseline(`settle-${tag}`);
  }
}

beforeAll(async () => {
  watch = watchProcess();
  peer = await startAdsPeer();
  client = new XdsClient({ address: peer.address, rootCertPem: peer.rootCertPem, token: 'fuzz-token', nodeName: 'node-a', state, backoff: { initialMs: 2, maxMs: 10 }, logger: log });
  client.on('nack', (n) => nacked.push(n.rejected.map((r) => r.name)));
  client.start();
  await restoreBaseline('start');
  await client.ready;
});

afterAll(async () => {
  await client?.stop();
  await peer?.close();
  watch?.dispose();
});

describe('fuzz: DeltaDiscoveryResponse bytes to a live XdsClient over gRPC', () => {
  const budget = fuzzBudget(100);
  const seen = { acks: 0, nacks: 0, dropped: 0 };
  it(
    `answers each response (ACK, NACK, or a dropped stream it recovers from) and keeps the last good state (${budget.runs} cases)`,
    async () => {
      const tick = progress('xds-wire', budget.runs);
      let n = 0;
      await fc.assert(
        fc.asyncProperty(wireArb, async ({ bytes }) => {
          tick();
          const tag = String(++n);
          // A case that failed half-way (fast-check then shrinks) may have left answers and state behind.
          await settleBaseline(tag);
          const before = new Map(BASELINE.map((b) => [b.name, held(state, b.name)]));
          const text = new Map([...before].map(([k, v]) => [k, JSON.stringify(v)]));
          const nacksBefore = nacked.length;

          const a = await sendAndAnswer(bytes);
          watch.check();
          const decoded = tryDecode(bytes);

          if (decoded === undefined) {
            // Undecodable: grpc-js cancels the call; the client reconnects by itself.
            expect(a, 'an undecodable response drops the stream').toBe('closed');
            seen.dropped++;
          } else {
            expect(a, 'a decodable response is answered on the stream').not.toBe('closed');
            const r = a as PbDeltaRequest;
            expect(r.responseNonce ?? '').toBe(decoded.nonce);
            expect(r.typeUrl).toBe(decoded.typeUrl);
            if (r.errorDetail) {
              seen.nacks++;
              expect(r.errorDetail.message.length).toBeGreaterThan(0);
            } else seen.acks++;
          }
          const rejected = new Set(nacked.slice(nacksBefore).flat());
          const handled = decoded !== undefined && TYPES.includes(decoded.typeUrl);
          const touched = (name: string) => handled && (decoded.removedResources.includes(name) || decoded.resources.some((x) => x.name === name && !rejected.has(name)));

          expect(violations(state)).toEqual([]);
          let changed = false;
          for (const [name, obj] of before) {
            if (touched(name)) {
              changed = true;
              continue;
            }
            expect(held(state, name), `baseline ${name}`).toBe(obj);
            expect(JSON.stringify(held(state, name))).toBe(text.get(name));
          }
          // What the client would resume from is in the store: held, or standing rejected (it denies).
          const standing = new Set(state.rejected().map((r) => r.name));
          for (const t of TYPES) for (const name of client.versions(t).keys()) expect(held(state, name) !== undefined || standing.has(name), `${name} is held or stands rejected`).toBe(true);
          // Every resource the client rejected stands rejected in the store until a good version or a removal.
          for (const name of rejected) if (name !== '(unnamed)' && !decoded?.removedResources.includes(name)) expect(standing.has(name), `${name} stands rejected`).toBe(true);
          if (changed || !atBaseline()) await restoreBaseline(tag);
          watch.check();
        }),
        fuzzParams(budget),
      );
      if (budget.runs >= 10_000) process.stderr.write(`fuzz xds-wire: ${JSON.stringify({ ...seen, streams: peer.streams })}\n`);
      // The positive twins: good responses were ACKed, bad ones NACKed, broken ones recovered from.
      expect(seen.acks).toBeGreaterThan(0);
      expect(seen.nacks).toBeGreaterThan(0);
      expect(seen.dropped).toBeGreaterThan(0);
      expect(peer.streams).toBeGreaterThan(1);
    },
    budget.testTimeoutMs,
  );
});
