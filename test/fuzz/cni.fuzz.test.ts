// Fuzz: CNI requests through the relay: the agent's CniServer on a real unix socket, reached
// directly (mutated JSON requests, mutated bytes, noise, split writes, clients that vanish,
// an oversized request) and through the real nodemesh-cni binary (mutated environment and
// stdin config). The handler behind the server does what the agent's does before enrolling
// (the CNI_ARGS it requires, the netns it checks, prevResult's address, the exclusion
// annotations) and keeps the enrolled pods in a map, the last good state. Every request gets a
// well-formed answer (OK, or ERR with a CNI error object) that matches what the handler did,
// nothing escapes to the process, the enrolled pods change only on OK, and a good ADD succeeds
// after every input.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CniServer, podAddressOf, type CniRequest } from '../../src/agent/cni-server.js';
import { exclusionsFrom } from '../../src/agent/enrollment.js';
import { CniError } from '../../src/errors.js';
import { fuzzBudget, fuzzParams, openFds, progress, settle, watchProcess, type ProcessWatch } from '../helpers/fuzz.js';
import { mutatedBytes, mutatedValue } from '../helpers/mutate.js';
import { cniPluginBinary, runProgram } from '../helpers/sim.js';

const MAX_REQUEST = 1 << 20; // src/agent/cni-server.ts: longer requests are cut without an answer

let dir: string;
let sock: string;
let netns: string;
let plugin: string;
let server: CniServer;
let watch: ProcessWatch;

interface Enrolled {
  ns: string;
  name: string;
  ip: string;
  containerId: string;
}
/** The last good state: pods enrolled by an answered-OK ADD. */
const enrolled = new Map<string, Enrolled>();
/** What the handler did with each request that reached it. */
const outcomes: { uid: string | undefined; ok: boolean }[] = [];
let inFlight = 0;

/** The agent's checks before enrolling (agent.ts #onCni), with a map in place of eBPF. */
async function handler(req: CniRequest): Promise<void> {
  inFlight++;
  const uid = req.args.K8S_POD_UID;
  try {
    const ns = req.args.K8S_POD_NAMESPACE;
    const name = req.args.K8S_POD_NAME;
    if (req.command === 'DEL') {
      const known = uid ? uid : [...enrolled].find(([, p]) => p.containerId === req.containerId)?.[0];
      if (known) enrolled.delete(known);
      outcomes.push({ uid, ok: true });
      return;
    }
    if (!ns || !name || !uid) throw new CniError('nodemesh agent: CNI_ARGS must carry K8S_POD_NAMESPACE, K8S_POD_NAME and K8S_POD_UID', { cniCode: 4 });
    if (req.command === 'CHECK') {
      outcomes.push({ uid, ok: true });
      return;
    }
    if (!req.netns) throw new CniError('nodemesh agent: CNI_NETNS is empty', { cniCode: 4 });
    if (req.netns !== netns) throw new CniError(`nodemesh agent: network namespace ${req.netns} does not exist`, { cniCode: 4 });
    const addr = podAddressOf(req.config);
    if (!addr) throw new CniError('nodemesh agent: no IPv4 address in prevResult', { cniCode: 7 });
    const rc = req.config.runtimeConfig as Record<string, unknown> | undefined;
    const annotations = rc?.['io.kubernetes.cri.pod-annotations'] as Record<string, string> | undefined;
    try {
      exclusionsFrom(annotations ?? {});
    } catch (e) {
      throw new CniError(`nodemesh agent: ${(e as Error).message}`, { cniCode: 7 });
    }
    await new Promise((r) => setImmediate(r)); // enrollment is asynchronous work
    enrolled.set(uid, { ns, name, ip: addr.ip, containerId: req.containerId });
    outcomes.push({ uid, ok: true });
  } catch (e) {
    outcomes.push({ uid, ok: false });
    throw e;
  } finally {
    inFlight--;
  }
}

const PREV = { cniVersion: '1.0.0', interfaces: [{ name: 'eth0', sandbox: '/run/netns/x' }], ips: [{ interface: 0, address: '10.244.0.7/24', gateway: '10.244.0.1' }] };
const conf = (extra: Record<string, unknown> = {}) => ({ cniVersion: '1.0.0', name: 'nodemesh-sim', type: 'nodemesh-cni', prevResult: PREV, runtimeConfig: { 'io.kubernetes.cri.pod-annotations': { 'traffic.sidecar.istio.io/excludeInboundPorts': '9090, 9091' } }, ...extra });
const args = (uid: string) => `IgnoreUnknown=1;K8S_POD_NAMESPACE=fuzz;K8S_POD_NAME=pod-${uid};K8S_POD_UID=${uid}`;
/** A request as nodemesh-cni writes it. */
const request = (command: string, uid: string, extra: Record<string, unknown> = {}) => ({ command, containerId: `c-${uid}`, netns: '@netns', ifName: 'eth0', args: args(uid), path: '/usr/lib/cni', config: conf(), ...extra });
const SEEDS = [request('ADD', 'u-fuzz'), request('DEL', 'u-fuzz'), request('CHECK', 'u-fuzz'), request('ADD', 'u-fuzz', { config: conf({ runtimeConfig: { 'io.kubernetes.cri.pod-annotations': { 'traffic.sidecar.istio.io/excludeOutboundPorts': '70000' } } }) })];
/** `@netns` stands for the real netns path (known only once the test runs). */
const withNetns = (s: string) => s.replaceAll('@netns', netns);

type Delivery = { chunks: number[]; then: 'end' | 'destroy' };
interface DirectCase {
  kind: 'direct';
  body: Uint8Array | string;
  delivery: Delivery;
}
interface PluginCase {
  kind: 'plugin';
  command: string | undefined;
  env: Record<string, string | undefined>;
  stdinRest: string;
  dead: boolean;
}

const deliveryArb: fc.Arbitrary<Delivery> = fc.record({ chunks: fc.array(fc.nat(64), { maxLength: 4 }), then: fc.oneof({ weight: 9, arbitrary: fc.constant('end' as const) }, fc.constant('destroy' as const)) });
const textSeeds = SEEDS.map((s) => new TextEncoder().encode(JSON.stringify(s)));
const BIG = 'x'.repeat(MAX_REQUEST + 1);

const directArb: fc.Arbitrary<DirectCase> = fc.record({
  kind: fc.constant('direct' as const),
  body: fc.oneof(
    { weight: 5, arbitrary: mutatedValue(SEEDS).map((v) => JSON.stringify(v) ?? '') },
    { weight: 4, arbitrary: mutatedBytes(textSeeds, 4) },
    { weight: 1, arbitrary: fc.uint8Array({ maxLength: 64 }) },
    { weight: 1, arbitrary: fc.constantFrom('', '{}', '[]', 'null', '{"command":"ADD"}', '{"command":"ADD","config":null}', '{"command":"ADD","config":"x"}', '{"command":"VERSION","config":{}}') },
    { weight: 1, arbitrary: fc.constant(SEEDS.map((s) => JSON.stringify(s)).join('')) },
    // Rare: a request over the limit.
    { weight: 1, arbitrary: fc.nat(99).map((n) => (n === 0 ? BIG : JSON.stringify(SEEDS[0]))) },
  ),
  delivery: deliveryArb,
});

const confRest = JSON.stringify(conf()).slice(1); // after `{`: the config the runtime pipes, minus agentSocket
const pluginArb: fc.Arbitrary<PluginCase> = fc.record({
  kind: fc.constant('plugin' as const),
  command: fc.oneof({ weight: 8, arbitrary: fc.constantFrom('ADD', 'DEL', 'CHECK') }, fc.constantFrom('VERSION', 'GC', 'STATUS', 'add', ''), fc.constant(undefined)),
  env: fc.record(
    {
      CNI_CONTAINERID: fc.oneof(fc.constant('c-plug'), fc.string({ maxLength: 12 })),
      CNI_NETNS: fc.oneof({ weight: 4, arbitrary: fc.constant('@netns') }, fc.constantFrom('', '/run/netns/absent'), fc.string({ maxLength: 12 })),
      CNI_IFNAME: fc.oneof(fc.constant('eth0'), fc.string({ maxLength: 8 })),
      CNI_ARGS: fc.oneof({ weight: 4, arbitrary: fc.constant(args('u-plug')) }, fc.constantFrom('', ';;;', '=', 'K8S_POD_UID=', 'K8S_POD_NAMESPACE=a;K8S_POD_NAME=b'), fc.string({ maxLength: 40 })),
      CNI_PATH: fc.constantFrom('/usr/lib/cni', ''),
    },
    { requiredKeys: [] },
  ),
  stdinRest: fc.oneof(
    { weight: 3, arbitrary: fc.constant(confRest) },
    { weight: 4, arbitrary: mutatedValue([conf()]).map((v) => (v !== null && typeof v === 'object' && !Array.isArray(v) ? JSON.stringify(v).slice(1) : `"x":${JSON.stringify(v) ?? 'null'}}`)) },
    { weight: 3, arbitrary: mutatedBytes([new TextEncoder().encode(confRest)], 4).map((b) => Buffer.from(b).toString('latin1')) },
  ),
  dead: fc.oneof({ weight: 15, arbitrary: fc.constant(false) }, fc.constant(true)),
});

interface Answer {
  text: string;
  ended: boolean;
}

function send(body: Uint8Array | string, d: Delivery): Promise<Answer | 'destroyed'> {
  return new Promise((resolve, reject) => {
    const s = connect(sock);
    let out = '';
    s.setEncoding('utf8');
    s.on('data', (x: string) => (out += x));
    s.on('error', () => {});
    const t = setTimeout(() => reject(new Error('no answer and no close within 10 s')), 10_000);
    s.on('close', () => {
      clearTimeout(t);
      resolve({ text: out, ended: true });
    });
    s.once('connect', () => {
      const b = typeof body === 'string' ? Buffer.from(body) : Buffer.from(body);
      let at = 0;
      for (const c of d.chunks) {
        s.write(b.subarray(at, at + c));
        at += c;
      }
      s.write(b.subarray(at));
      if (d.then === 'destroy') {
        s.destroy();
        clearTimeout(t);
        resolve('destroyed');
      } else s.end();
    });
  });
}

/** `OK\n<body>` or `ERR <code>\n<CNI error JSON>`: the wire format of docs/cni.md. */
function parseAnswer(text: string): { ok: true; body: string } | { ok: false; code: number; error: { code: number; msg: string; cniVersion: string } } {
  const nl = text.indexOf('\n');
  expect(nl, `answer ${JSON.stringify(text.slice(0, 80))}`).toBeGreaterThan(0);
  const head = text.slice(0, nl);
  const body = text.slice(nl + 1);
  if (head === 'OK') return { ok: true, body };
  const m = /^ERR (\d+)$/.exec(head);
  expect(m, `answer head ${JSON.stringify(head)}`).not.toBeNull();
  const error = JSON.parse(body) as { code: number; msg: string; cniVersion: string };
  expect(error.code).toBe(Number(m![1]));
  expect(typeof error.msg).toBe('string');
  return { ok: false, code: Number(m![1]), error };
}

const seen = { ok: 0, err: 0, cut: 0, destroyed: 0, plugin: 0, pluginOk: 0 };

async function runDirect(c: DirectCase): Promise<void> {
  const before = new Map(enrolled);
  const n = outcomes.length;
  const body = typeof c.body === 'string' ? withNetns(c.body) : c.body;
  const a = await send(body, c.delivery);
  if (a === 'destroyed') {
    seen.destroyed++;
    // The handler may still run; the server must survive writing to a closed socket.
    await settle(() => inFlight === 0, 5000);
    return;
  }
  const mine = outcomes.slice(n);
  expect(mine.length, 'the handler ran at most once').toBeLessThanOrEqual(1);
  if (typeof body === 'string' && body.length > MAX_REQUEST) {
    seen.cut++;
    expect(a.text, 'an oversized request is cut without an answer').toBe('');
    expect(mine).toEqual([]);
    return;
  }
  const r = parseAnswer(a.text);
  if (r.ok) {
    seen.ok++;
    expect(mine, 'OK only after the handler succeeded').toEqual([expect.objectContaining({ ok: true })]);
  } else {
    seen.err++;
    if (mine.length) expect(mine[0]!.ok, 'ERR after a failed handler, or before it ran').toBe(false);
    expect(r.error.msg.length).toBeGreaterThan(0);
    // A refused request changes nothing.
    expect(new Map(enrolled)).toEqual(before);
  }
}

function isJsonObject(text: string): boolean {
  try {
    const v: unknown = JSON.parse(text);
    return v !== null && typeof v === 'object' && !Array.isArray(v);
  } catch {
    return false;
  }
}

async function runPlugin(c: PluginCase): Promise<void> {
  seen.plugin++;
  const before = new Map(enrolled);
  const socketPath = c.dead ? join(dir, 'nobody-listens.sock') : sock;
  const env: NodeJS.ProcessEnv = { PATH: process.env.PATH };
  if (c.command !== undefined) env.CNI_COMMAND = c.command;
  for (const [k, v] of Object.entries(c.env)) if (v !== undefined) env[k] = withNetns(v).replaceAll('\0', '');
  // agentSocket is always the first member, so no mutation can send the plugin to the node's real agent.
  const stdin = `{"agentSocket":${JSON.stringify(socketPath)},${withNetns(c.stdinRest)}`;
  const r = await runProgram(plugin, [], { env, stdin, timeoutMs: 15_000 });
  expect([0, 1], `exit code (stderr ${r.stderr.slice(0, 200)})`).toContain(r.code);
  if (c.command === 'VERSION') {
    expect(r.code).toBe(0);
    return;
  }
  if (r.code !== 0) {
    const e = JSON.parse(r.stdout) as { code: unknown; msg: unknown };
    expect(typeof e.code, `CNI error ${r.stdout.slice(0, 200)}`).toBe('number');
    expect(typeof e.msg).toBe('string');
    expect(new Map(enrolled), 'a failed ADD/CHECK/DEL changes nothing').toEqual(before);
  } else seen.pluginOk++;
  // DEL of a well-formed invocation succeeds when the agent is away (fail closed is for ADD and CHECK).
  if (c.dead && c.command === 'DEL' && env.CNI_CONTAINERID && env.CNI_IFNAME && isJsonObject(stdin)) expect(r.code, `DEL with no agent: ${r.stdout.slice(0, 200)}`).toBe(0);
  if (c.dead && (c.command === 'ADD' || c.command === 'CHECK')) expect(r.code, `${c.command} with no agent fails closed`).toBe(1);
}

let good = 0;
/** The positive twin of every case: a good ADD is enrolled and answered with prevResult; DEL undoes it. */
async function goodAdd(): Promise<void> {
  const uid = `g${++good}`;
  const a = await send(withNetns(JSON.stringify(request('ADD', uid))), { chunks: [], then: 'end' });
  expect(a).not.toBe('destroyed');
  const r = parseAnswer((a as Answer).text);
  expect(r.ok, `good ADD answered ${(a as Answer).text.slice(0, 120)}`).toBe(true);
  expect(JSON.parse((r as { body: string }).body)).toEqual(PREV);
  expect(enrolled.get(uid)?.ip).toBe('10.244.0.7');
  const d = parseAnswer(((await send(JSON.stringify(request('DEL', uid)), { chunks: [], then: 'end' })) as Answer).text);
  expect(d.ok).toBe(true);
  expect(enrolled.has(uid)).toBe(false);
}

beforeAll(async () => {
  watch = watchProcess();
  plugin = cniPluginBinary();
  dir = mkdtempSync(join(tmpdir(), 'nm-fuzz-cni-'));
  sock = join(dir, 'agent', 'cni.sock');
  netns = join(dir, 'netns-pod');
  writeFileSync(netns, '');
  server = await CniServer.listen(sock, handler, pino({ level: 'silent' }));
  // The last good state every case must leave alone.
  const a = await send(withNetns(JSON.stringify(request('ADD', 'u-good'))), { chunks: [], then: 'end' });
  expect(parseAnswer((a as Answer).text).ok).toBe(true);
});

afterAll(async () => {
  await server?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
  watch?.dispose();
});

describe('fuzz: CNI requests through the relay', () => {
  const budget = fuzzBudget(150);
  it(
    `answers every request well-formed, enrolls only on OK, and a good ADD succeeds after each (${budget.runs} cases)`,
    async () => {
      const baseline = enrolled.get('u-good');
      expect(baseline).toBeDefined();
      await goodAdd();
      const fdsBefore = openFds();
      const tick = progress('cni', budget.runs);
      await fc.assert(
        fc.asyncProperty(fc.oneof<[fc.WeightedArbitrary<DirectCase>, fc.WeightedArbitrary<PluginCase>]>({ weight: 5, arbitrary: directArb }, { weight: 1, arbitrary: pluginArb }), async (c) => {
          tick();
          if (c.kind === 'direct') await runDirect(c);
          else await runPlugin(c);
          watch.check();
          expect(enrolled.get('u-good'), 'the pod enrolled before the fuzzing').toBe(baseline);
          await goodAdd();
          // Leave no fuzz pod behind for the next case.
          for (const uid of [...enrolled.keys()]) if (uid !== 'u-good') enrolled.delete(uid);
        }),
        fuzzParams(budget),
      );
      if (budget.runs >= 10_000) process.stderr.write(`fuzz cni: ${JSON.stringify(seen)}\n`);
      expect(await settle(() => inFlight === 0)).toBe(true);
      if (fdsBefore !== undefined) expect(await settle(() => openFds()! <= fdsBefore + 8), `fds ${fdsBefore} → ${openFds()}`).toBe(true);
      // The positive twins: the inputs produced both answers, and the plugin ran.
      expect(seen.ok).toBeGreaterThan(0);
      expect(seen.err).toBeGreaterThan(0);
      expect(seen.plugin).toBeGreaterThan(0);
    },
    budget.testTimeoutMs,
  );
});
