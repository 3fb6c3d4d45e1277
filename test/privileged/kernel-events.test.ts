// Kernel events end to end, in real network namespaces with the real loaded programs: pods A
// and B enrolled, pod C not enrolled but observed through the pods' cgroup parent. Real
// clients in the pods make the connections; a Redirector subscription in this process reads
// the ring. Every negative (nothing while unsubscribed, a dropped SYN, lost events) has its
// positive twin in the same setup.
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, rmdirSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { describePrivileged } from '../helpers/privileged.js';
import { Redirector, findCgroup2Root, listenInNetns, type KernelEvent, type KernelEventBatch } from '../../src/redirect/index.js';
import { netnsCookieOfPath } from '../../src/redirect/netns.js';
import { BPF_ANY, encodeEnrolled, ipv4Key } from '../../src/redirect/layout.js';
import { kTestHooks } from '../../src/redirect/redirector.js';
import { ipToBytes } from '../../src/net/index.js';

const PID = process.pid;
const NS_A = `nmt-${PID}-kev-a`;
const NS_B = `nmt-${PID}-kev-b`;
const NS_C = `nmt-${PID}-kev-c`;
const NETNS_A = `/run/netns/${NS_A}`;
const NETNS_B = `/run/netns/${NS_B}`;
const NETNS_C = `/run/netns/${NS_C}`;
const IP_A = '10.251.0.1';
const IP_B = '10.251.0.2';
/** On B's interface too: not enrolled, and inside A's excluded CIDR. */
const IP_B_EXTRA = '10.251.0.200';
/** B's second interface, facing C. */
const IP_B2 = '10.251.1.2';
const IP_C = '10.251.1.3';

/** What the test's proxy and apps answer, after reading the whole request. */
const OUT_REPLY = 'o'.repeat(70_001);
const IN_REPLY = 'i'.repeat(3_333);

/**
 * argv: host port nbytes. Connects, sends nbytes, half-closes, reads to EOF; prints its
 * SO_COOKIE (57), local and peer address and what it received, or the connect's errno name.
 */
const PY_CLIENT = `
import errno, json, socket, sys
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
s = socket.socket(socket.AF_INET6 if ':' in host else socket.AF_INET, socket.SOCK_STREAM)
s.settimeout(10)
try:
    s.connect((host, port))
except OSError as e:
    print(json.dumps({'error': errno.errorcode.get(e.errno, str(e.errno))}))
    sys.exit(0)
cookie = int.from_bytes(s.getsockopt(socket.SOL_SOCKET, 57, 8), sys.byteorder)
local, peer = s.getsockname(), s.getpeername()
if n:
    s.sendall(b'q' * n)
s.shutdown(socket.SHUT_WR)
data = b''
while True:
    chunk = s.recv(65536)
    if not chunk:
        break
    data += chunk
s.close()
print(json.dumps({'cookie': str(cookie), 'local': [local[0], local[1]], 'peer': [peer[0], peer[1]], 'received': len(data), 'head': data[:64].decode()}))
`;

/** argv: count. That many connects to 127.0.0.1:1 (refused at once); each is one event. */
const PY_FLOOD = `
import json, socket, sys
refused = 0
for i in range(int(sys.argv[1])):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.connect(('127.0.0.1', 1))
    except ConnectionRefusedError:
        refused += 1
    s.close()
print(json.dumps({'refused': refused}))
`;

interface ClientResult {
  cookie?: string;
  local?: [string, number];
  peer?: [string, number];
  received?: number;
  head?: string;
  error?: string;
}

function ip(...args: string[]): string {
  return execFileSync('ip', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

function fdOf(server: Server): number {
  return (server as unknown as { _handle: { fd: number } })._handle.fd;
}

/** Runs a python script inside a pod: joins its cgroup before entering its netns. */
function inPod(cgroup: string, netns: string, script: string, args: Array<string | number>): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    const child = spawn('sh', ['-c', 'echo $$ > "$0/cgroup.procs" && ns="$1" && shift && exec nsenter --net="$ns" /usr/bin/python3 -c "$@"', cgroup, netns, script, ...args.map(String)], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
    child.on('close', (code) => {
      clearTimeout(timer);
      if (code === 0) resolve(JSON.parse(out) as Record<string, unknown>);
      else reject(new Error(`python in ${netns} exited ${code}: ${err.trim()}`));
    });
  });
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

async function until<T>(what: string, get: () => T | undefined, ms = 10_000): Promise<T> {
  const t0 = Date.now();
  for (;;) {
    const v = get();
    if (v !== undefined) return v;
    if (Date.now() - t0 > ms) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

/** A server that reads each connection to its end, then answers `reply` and closes. */
async function serve(netns: string, host: string, port: number, reply: string, servers: Server[]): Promise<Server> {
  const fd = await listenInNetns(netns, { host, port });
  const server = createServer({ allowHalfOpen: true }, (sock: Socket) => {
    sock.on('error', () => {});
    sock.on('data', () => {});
    sock.on('end', () => sock.end(reply));
  });
  await new Promise<void>((resolve) => server.listen({ fd }, resolve));
  servers.push(server);
  return server;
}

describePrivileged('kernel events from the redirection programs, in real network namespaces', () => {
  const pinRoot = `/sys/fs/bpf/nmt-kev-${PID}`;
  let cgParent = '';
  let cgA = '';
  let cgB = '';
  let cgC = '';
  let r: Redirector;
  let cookieA = 0n;
  let cookieB = 0n;
  let cookieC = 0n;
  const servers: Server[] = [];
  let inbound: Server;

  /** All events of the current subscription, in arrival order. */
  let events: KernelEvent[] = [];
  let batches: KernelEventBatch[] = [];
  let unsubscribe: (() => void) | null = null;
  function subscribe(): void {
    events = [];
    batches = [];
    unsubscribe = r.onKernelEvents((b) => {
      batches.push(b);
      events.push(...b.events);
    });
  }
  function stop(): void {
    unsubscribe?.();
    unsubscribe = null;
  }
  const byCookie = (c: bigint) => events.filter((e) => e.socketCookie === c);
  const client = async (cg: string, netns: string, host: string, port: number, n: number) => (await inPod(cg, netns, PY_CLIENT, [host, port, n])) as ClientResult;
  const cfgWord = () => r[kTestHooks]().binding.mapLookup(r[kTestHooks]().mapFd('nm_events_cfg'), Buffer.alloc(4))!.readUInt32LE(0);

  beforeAll(async () => {
    for (const ns of [NS_A, NS_B, NS_C]) {
      ip('netns', 'add', ns);
      ip('-n', ns, 'link', 'set', 'lo', 'up');
    }
    // A <-> B on 10.251.0.0/24, C <-> B on 10.251.1.0/24; C reaches B's pod IP through B.
    ip('-n', NS_A, 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', NS_B);
    ip('-n', NS_C, 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'eth1', 'netns', NS_B);
    ip('-n', NS_A, 'addr', 'add', `${IP_A}/24`, 'dev', 'eth0');
    ip('-n', NS_B, 'addr', 'add', `${IP_B}/24`, 'dev', 'eth0');
    ip('-n', NS_B, 'addr', 'add', `${IP_B_EXTRA}/24`, 'dev', 'eth0');
    ip('-n', NS_B, 'addr', 'add', `${IP_B2}/24`, 'dev', 'eth1');
    ip('-n', NS_C, 'addr', 'add', `${IP_C}/24`, 'dev', 'eth0');
    for (const [ns, dev] of [[NS_A, 'eth0'], [NS_B, 'eth0'], [NS_B, 'eth1'], [NS_C, 'eth0']] as const) ip('-n', ns, 'link', 'set', dev, 'up');
    ip('-n', NS_C, 'route', 'add', '10.251.0.0/24', 'via', IP_B2);

    cgParent = join(findCgroup2Root(), `nodemesh-kev-${PID}`);
    cgA = join(cgParent, 'poda');
    cgB = join(cgParent, 'podb');
    cgC = join(cgParent, 'podc');
    for (const d of [cgA, cgB, cgC]) mkdirSync(d, { recursive: true });

    r = await Redirector.open({ pinRoot });
    await r.attachPod({ uid: 'a', cgroupPath: cgA, netnsPath: NETNS_A, ip: IP_A, excludeOutboundPorts: [8081], excludeOutboundCidrs: ['10.251.0.192/26'] });
    await r.attachPod({ uid: 'b', cgroupPath: cgB, netnsPath: NETNS_B, ip: IP_B, excludeInboundPorts: [8081] });
    // C is not enrolled: only the observer at the pods' parent sees it.
    await r.observeCgroup(cgParent);
    cookieA = await netnsCookieOfPath(NETNS_A);
    cookieB = await netnsCookieOfPath(NETNS_B);
    cookieC = await netnsCookieOfPath(NETNS_C);

    // The proxy side of A (outbound capture) and of B (inbound plaintext), and B's apps.
    await serve(NETNS_A, '127.0.0.1', 15001, OUT_REPLY, servers);
    inbound = await serve(NETNS_B, '127.0.0.1', 15006, IN_REPLY, servers);
    r.registerInboundListener(IP_B, 'plaintext', fdOf(inbound));
    await serve(NETNS_B, '0.0.0.0', 8080, 'app8080', servers);
    await serve(NETNS_B, '0.0.0.0', 8081, 'app8081', servers);
  });

  afterAll(async () => {
    stop();
    for (const s of servers) if (s.listening) await new Promise<void>((resolve) => s.close(() => resolve()));
    const failures: unknown[] = [];
    const step = async (f: () => unknown) => {
      try {
        await f();
      } catch (err) {
        failures.push(err);
      }
    };
    await step(() => r?.unobserveCgroup(cgParent));
    await step(() => r?.detachPod('a', IP_A));
    await step(() => r?.detachPod('b', IP_B));
    await step(() => r?.close());
    await step(() => Redirector.destroyAll(pinRoot));
    for (const ns of [NS_A, NS_B, NS_C]) await step(() => ip('netns', 'del', ns));
    for (const d of [cgA, cgB, cgC, cgParent]) await step(() => existsSync(d) && rmdirSync(d));
    expect(failures).toEqual([]);
    expect(existsSync(pinRoot)).toBe(false);
    expect(ip('netns', 'list').split('\n').filter((l) => l.startsWith(`nmt-${PID}-kev-`))).toEqual([]);
    expect(existsSync(cgParent)).toBe(false);
    expect(readdirSync(findCgroup2Root()).filter((n) => n === `nodemesh-kev-${PID}`)).toEqual([]);
  });

  it('writes nothing while nobody is subscribed, and reports a connect once subscribed', async () => {
    expect(cfgWord()).toBe(0);
    const quiet = await client(cgA, NETNS_A, IP_B, 8080, 10);
    expect(quiet.received).toBe(OUT_REPLY.length); // captured and served while unsubscribed

    subscribe();
    expect(cfgWord()).toBe(1);
    // Nothing was in the ring: the programs wrote nothing for the connection made while off.
    expect(r[kTestHooks]().kernelEvents.stats()!.discarded).toBe(0n);
    const loud = await client(cgA, NETNS_A, IP_B, 8080, 10);
    await until('the connect of the subscribed client', () => byCookie(BigInt(loud.cookie!)).find((e) => e.kind === 'connect_redirected'));
    expect(byCookie(BigInt(quiet.cookie!))).toEqual([]);

    // The twin of "discarded 0": events written while subscribed but never read are found
    // (and dropped) by the next subscription.
    r[kTestHooks]().kernelEvents.setPaused(true);
    await client(cgA, NETNS_A, IP_B, 8080, 10);
    stop();
    expect(cfgWord()).toBe(0);
    subscribe();
    expect(r[kTestHooks]().kernelEvents.stats()!.discarded).toBeGreaterThan(0n);
  });

  it('reports a redirected connect with the original destination and cookies, and its close with the exact bytes', async () => {
    const res = await client(cgA, NETNS_A, IP_B, 8080, 12_345);
    expect(res.received).toBe(OUT_REPLY.length);
    const cookie = BigInt(res.cookie!);
    expect(cookie).not.toBe(0n);
    const close = await until('the close', () => byCookie(cookie).find((e) => e.kind === 'close'));
    const conn = byCookie(cookie).filter((e) => e.kind !== 'close');
    expect(conn).toHaveLength(1); // no second report from the observer at the parent cgroup
    expect(conn[0]).toMatchObject({ kind: 'connect_redirected', enrolled: true, netnsCookie: cookieA, dst: { ip: IP_B, port: 8080 }, src: { ip: '0.0.0.0', port: 0 } });
    expect(conn[0]!.reason).toBeUndefined();
    expect(close).toMatchObject({
      enrolled: true,
      netnsCookie: cookieA,
      src: { ip: '127.0.0.1', port: res.local![1] },
      dst: { ip: '127.0.0.1', port: 15001 },
      bytesSent: 12_345n,
      bytesReceived: BigInt(OUT_REPLY.length),
    });
    expect(close.monotonicNs).toBeGreaterThan(conn[0]!.monotonicNs);
    expect(byCookie(cookie).filter((e) => e.kind === 'close')).toHaveLength(1);
  });

  it('reports passed connects with their reason: excluded port, excluded CIDR, loopback', async () => {
    const port = await client(cgA, NETNS_A, IP_B, 8081, 5);
    expect(port.head).toBe('app8081'); // passed, and it works
    const extra = await client(cgA, NETNS_A, IP_B_EXTRA, 8080, 5);
    expect(extra.head).toBe('app8080');
    await serve(NETNS_A, '127.0.0.1', 7777, 'loop', servers);
    const loop = await client(cgA, NETNS_A, '127.0.0.1', 7777, 5);
    expect(loop.head).toBe('loop');

    const ev = (c: ClientResult) => until('the connect', () => byCookie(BigInt(c.cookie!)).find((e) => e.kind === 'connect_passed'));
    expect(await ev(port)).toMatchObject({ reason: 'excluded_port', enrolled: true, netnsCookie: cookieA, dst: { ip: IP_B, port: 8081 } });
    expect(await ev(extra)).toMatchObject({ reason: 'excluded_cidr', enrolled: true, dst: { ip: IP_B_EXTRA, port: 8080 } });
    expect(await ev(loop)).toMatchObject({ reason: 'loopback', enrolled: true, dst: { ip: '127.0.0.1', port: 7777 } });
    // B's side of the first two: its sk_lookup passed the SYNs, for its own reasons.
    const syn = (dst: string, dport: number, sport: number) => events.find((e) => e.kind === 'lookup_passed' && e.dst.ip === dst && e.dst.port === dport && e.src.port === sport);
    expect(await until('B passing the excluded port', () => syn(IP_B, 8081, port.local![1]))).toMatchObject({ reason: 'excluded_port', enrolled: true, netnsCookie: cookieB, src: { ip: IP_A }, socketCookie: 0n });
    expect(await until('B passing the address it does not enroll', () => syn(IP_B_EXTRA, 8080, extra.local![1]))).toMatchObject({ reason: 'not_enrolled', enrolled: false });
  });

  it('reports an inbound SYN steered to the listener, dropped once the listener is gone, steered again once it is back', async () => {
    const steered = await client(cgC, NETNS_C, IP_B, 9999, 100);
    expect(steered.received).toBe(IN_REPLY.length);
    const lookup = (c: ClientResult, kind: KernelEvent['kind']) =>
      until(kind, () => events.find((e) => e.kind === kind && e.src.ip === IP_C && e.src.port === c.local![1] && e.dst.port === 9999));
    expect(await lookup(steered, 'lookup_steered')).toMatchObject({ enrolled: true, netnsCookie: cookieB, socketCookie: 0n, dst: { ip: IP_B, port: 9999 } });

    expect(r.unregisterInboundListener(IP_B, 'plaintext')).toBe(true);
    const t0 = events.length;
    const refused = await client(cgC, NETNS_C, IP_B, 9999, 100);
    expect(refused.error).toBe('ECONNREFUSED');
    const dropped = await until('the dropped SYN', () => events.slice(t0).find((e) => e.kind === 'lookup_dropped'));
    expect(dropped).toMatchObject({ reason: 'no_listener', enrolled: true, netnsCookie: cookieB, src: { ip: IP_C }, dst: { ip: IP_B, port: 9999 } });

    r.registerInboundListener(IP_B, 'plaintext', fdOf(inbound));
    const again = await client(cgC, NETNS_C, IP_B, 9999, 100);
    expect(again.received).toBe(IN_REPLY.length);
    await lookup(again, 'lookup_steered');
  });

  it('observes a pod that is not enrolled: its connect and close, marked enrolled: false', async () => {
    const res = await client(cgC, NETNS_C, IP_B, 9999, 4_321);
    expect(res.received).toBe(IN_REPLY.length);
    const cookie = BigInt(res.cookie!);
    const close = await until('the observed close', () => byCookie(cookie).find((e) => e.kind === 'close'));
    const connect = byCookie(cookie).find((e) => e.kind === 'connect_passed');
    expect(connect).toMatchObject({ reason: 'observed', enrolled: false, netnsCookie: cookieC, dst: { ip: IP_B, port: 9999 } });
    expect(close).toMatchObject({
      reason: 'observed',
      enrolled: false,
      netnsCookie: cookieC,
      src: { ip: IP_C, port: res.local![1] },
      dst: { ip: IP_B, port: 9999 },
      bytesSent: 4_321n,
      bytesReceived: BigInt(IN_REPLY.length),
    });
    // Observation only: C's connect went where it was going (B's inbound listener answered).
    expect(res.peer).toEqual([IP_B, 9999]);
    // The enrolled twin, in the same subscription: A's connect is enrolled and reported once.
    const a = await client(cgA, NETNS_A, IP_B, 8080, 1);
    await until('A closing', () => byCookie(BigInt(a.cookie!)).find((e) => e.kind === 'close'));
    expect(byCookie(BigInt(a.cookie!)).map((e) => [e.kind, e.enrolled])).toEqual([
      ['connect_redirected', true],
      ['close', true],
    ]);
  });

  it('reports a refused connect (native IPv6) as passed with refused, and the connect that works beside it', async () => {
    const v6 = await client(cgA, NETNS_A, 'fd00:251::9', 8080, 1);
    expect(v6.error).toBe('EPERM');
    const refused = await until('the refused connect', () => events.find((e) => e.kind === 'connect_passed' && e.dst.ip === 'fd00:251::9'));
    expect(refused).toMatchObject({ reason: 'ipv6', refused: true, enrolled: true, netnsCookie: cookieA, dst: { port: 8080 } });
    const ok = await client(cgA, NETNS_A, IP_B, 8080, 1);
    const redirected = await until('the redirected twin', () => byCookie(BigInt(ok.cookie!)).find((e) => e.kind === 'connect_redirected'));
    expect(redirected.refused).toBeUndefined();
  });

  it('reports the sk_lookup verdicts a crafted SYN meets (BPF_PROG_RUN): self, fail open, IPv6', async () => {
    const h = r[kTestHooks]();
    const FAIL_OPEN = '10.251.9.3';
    h.binding.mapUpdate(h.mapFd('nm_enrolled'), ipv4Key(FAIL_OPEN), encodeEnrolled({ flags: 1, excludePorts: [], netnsCookie: 0x1234n }), BPF_ANY);
    try {
      // struct bpf_sk_lookup, 72 bytes (see bpf-sk-lookup.test.ts).
      const ctx = (remote: string, local: string, localPort: number) => {
        const b = Buffer.alloc(72);
        const v6 = remote.includes(':');
        b.writeUInt32LE(v6 ? 10 : 2, 8);
        b.writeUInt32LE(6, 12);
        ipToBytes(remote).copy(b, v6 ? 20 : 16);
        b.writeUInt16BE(40001, 36);
        ipToBytes(local).copy(b, v6 ? 44 : 40);
        b.writeUInt32LE(localPort, 60);
        return b;
      };
      const run = (c: Buffer) => h.binding.progTestRun(h.progFd('nm_sk_lookup'), { ctxIn: c, ctxOutSize: 72 });
      expect((await run(ctx(IP_B, IP_B, 8080))).retval).toBe(1);
      expect((await run(ctx('10.251.9.50', FAIL_OPEN, 8080))).retval).toBe(1);
      expect((await run(ctx('fd00:251::2', 'fd00:251::1', 8080))).retval).toBe(0);
      const seen = (pred: (e: KernelEvent) => boolean, what: string) => until(what, () => events.find((e) => e.src.port === 40001 && pred(e)));
      expect(await seen((e) => e.src.ip === IP_B, 'self')).toMatchObject({ kind: 'lookup_passed', reason: 'self', enrolled: true, netnsCookie: cookieB });
      expect(await seen((e) => e.dst.ip === FAIL_OPEN, 'fail open')).toMatchObject({ kind: 'lookup_passed', reason: 'no_listener', enrolled: true, netnsCookie: 0x1234n });
      expect(await seen((e) => e.dst.ip === 'fd00:251::1', 'ipv6')).toMatchObject({ kind: 'lookup_dropped', reason: 'ipv6', src: { ip: 'fd00:251::2' }, netnsCookie: 0n });
    } finally {
      h.binding.mapDelete(h.mapFd('nm_enrolled'), ipv4Key(FAIL_OPEN));
    }
  });

  it('counts what a full ring loses while connections keep working, and delivers again once drained', async () => {
    const hooks = r[kTestHooks]();
    const lost0 = r.kernelEventsLost();
    hooks.kernelEvents.setPaused(true);
    // About 11,900 events fit in the 1 MiB ring; each refused loopback connect is one.
    const flood = await inPod(cgA, NETNS_A, PY_FLOOD, [14_000]);
    expect(flood.refused).toBe(14_000);
    const lost1 = r.kernelEventsLost();
    expect(lost1).toBeGreaterThan(lost0);
    // The data path did not wait: a captured connection works with the ring full.
    const during = await client(cgA, NETNS_A, IP_B, 8080, 7);
    expect(during.received).toBe(OUT_REPLY.length);
    expect(r.kernelEventsLost()).toBeGreaterThan(lost1);

    hooks.kernelEvents.setPaused(false);
    const after = await client(cgA, NETNS_A, IP_B, 8080, 7);
    await until('an event after the drain', () => byCookie(BigInt(after.cookie!)).find((e) => e.kind === 'close'));
    expect(batches.at(-1)!.lostTotal).toBe(r.kernelEventsLost());
    expect(batches.every((b) => b.events.length <= 256)).toBe(true);
  });

  it('turns emission off with the last unsubscribe, and stops the poller', () => {
    const hooks = r[kTestHooks]();
    const second = r.onKernelEvents(() => {});
    stop();
    expect(cfgWord()).toBe(1); // one subscriber left
    second();
    expect(cfgWord()).toBe(0);
    expect(hooks.kernelEvents.stats()).toBeNull();
  });
});
