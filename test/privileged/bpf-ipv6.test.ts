// The IPv6 rule of the redirection programs, run for real: four "pods" (netns + cgroup) on one
// bridge, each with the kernel's link-local address on eth0. An enrolled pod's native IPv6 TCP
// connects are refused (connect6), native IPv6 SYNs to it are dropped (sk_lookup), while IPv6
// loopback, v4-mapped capture and UDP keep working, and pods that are not enrolled talk over
// link-local freely. The kernel cannot BPF_PROG_RUN cgroup sock_addr programs (see
// bpf-sk-lookup.test.ts), so connect6 is exercised through real connects.
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, rmdirSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { describePrivileged } from '../helpers/privileged.js';
import { Redirector, findCgroup2Root, listenInNetns } from '../../src/redirect/index.js';

const PID = process.pid;
const SWITCH = `nmt-${PID}-6sw`;
const PODS = ['a', 'b', 'c', 'd'] as const;
type PodName = (typeof PODS)[number];
const NS = (p: PodName) => `nmt-${PID}-6${p}`;
const NETNS = (p: PodName) => `/run/netns/${NS(p)}`;
const IP: Record<PodName, string> = { a: '10.250.6.1', b: '10.250.6.2', c: '10.250.6.3', d: '10.250.6.4' };
const APP_PORT = 8080;

/**
 * argv: tcp|udp host port. Connects (getaddrinfo, so fe80::x%eth0 carries its scope), reads
 * until EOF (TCP) or sends one datagram (UDP), and prints {outcome, data?, peer?}: ok, sent,
 * timeout, or the errno's name (EPERM, ECONNREFUSED, ...).
 */
const PY_CLIENT = `
import errno, json, socket, sys
proto, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
fam = socket.AF_INET6 if ':' in host else socket.AF_INET
kind = socket.SOCK_STREAM if proto == 'tcp' else socket.SOCK_DGRAM
res = {}
try:
    addr = socket.getaddrinfo(host, port, fam, kind)[0][4]
    s = socket.socket(fam, kind)
    s.settimeout(8)
    s.connect(addr)
    if proto == 'udp':
        s.send(b'datagram')
        res['outcome'] = 'sent'
    else:
        res['peer'] = s.getpeername()[0]
        data = b''
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        res['outcome'], res['data'] = 'ok', data.decode()
except socket.timeout:
    res['outcome'] = 'timeout'
except OSError as e:
    res['outcome'] = errno.errorcode.get(e.errno, str(e.errno))
print(json.dumps(res))
`;

/** argv: port. Binds UDP [::]:port, prints "ready", then the first datagram (or "timeout"). */
const PY_UDP_RECEIVER = `
import socket, sys
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.bind(('::', int(sys.argv[1])))
s.settimeout(8)
print('ready', flush=True)
try:
    print(s.recvfrom(100)[0].decode(), flush=True)
except socket.timeout:
    print('timeout', flush=True)
`;

interface ClientResult {
  outcome: string;
  data?: string;
  peer?: string;
}

function ip(...args: string[]): string {
  return execFileSync('ip', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

/** The kernel's link-local address of eth0 in a netns, once it has one (bounded wait). */
async function linkLocalOf(ns: string): Promise<string> {
  for (let i = 0; i < 100; i++) {
    const out = ip('-n', ns, '-6', '-o', 'addr', 'show', 'dev', 'eth0', 'scope', 'link');
    const m = /inet6 (fe80::[0-9a-f:]+)\/64/.exec(out);
    if (m && !out.includes('tentative')) return m[1]!;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error(`${ns} has no link-local address on eth0`);
}

function sysctlIn(ns: string, ...kv: string[]): void {
  execFileSync('ip', ['netns', 'exec', ns, 'sysctl', '-qw', ...kv], { stdio: ['ignore', 'ignore', 'pipe'] });
}

/**
 * Runs a python program in a pod's netns; with `cgroup`, joined before entering the netns (as
 * a pod's process is). Without one it stays in this test's cgroup, which no program is
 * attached to: that is how the agent's own sockets and a non-enrolled pod look.
 */
function python(netns: string, cgroup: string | null, program: string, args: string[], onLine?: (line: string) => void): Promise<string> {
  return new Promise((resolve, reject) => {
    const enter = cgroup ? 'echo $$ > "$1/cgroup.procs" && ' : '';
    const child = spawn('sh', ['-c', `${enter}ns="$2"; shift 2; exec nsenter --net="$ns" /usr/bin/python3 -c "$0" "$@"`, program, cgroup ?? '', netns, ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      if (onLine) for (const l of d.toString().split('\n')) if (l) onLine(l);
    });
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
    child.on('close', (code) => {
      clearTimeout(timer);
      if (code === 0) resolve(out);
      else reject(new Error(`python in ${netns} exited ${code}: ${err.trim()}`));
    });
  });
}

describePrivileged('IPv6 for enrolled pods: refused outbound, dropped inbound, loopback kept', () => {
  const pinRoot = `/sys/fs/bpf/nmt-ipv6-${PID}`;
  const cgTest = join(findCgroup2Root(), `nodemesh-test-${PID}-v6`);
  const CG = (p: PodName) => join(cgTest, `pod${p}`);
  const linkLocal = {} as Record<PodName, string>;
  let r: Redirector;
  const servers: Server[] = [];
  /** Who each app server accepted (remote address), per pod. */
  const accepted = { a: [], b: [], c: [], d: [] } as Record<PodName, string[]>;

  const client = async (from: PodName, cgroup: PodName | null, proto: 'tcp' | 'udp', host: string, port = APP_PORT): Promise<ClientResult> =>
    JSON.parse(await python(NETNS(from), cgroup ? CG(cgroup) : null, PY_CLIENT, [proto, host, String(port)])) as ClientResult;
  const ll = (p: PodName) => `${linkLocal[p]}%eth0`;

  async function serve(netns: string, host: string, port: number, reply: (sock: Socket) => string, seen?: string[]): Promise<Server> {
    const fd = await listenInNetns(netns, { host, port });
    const server = createServer((sock) => {
      sock.on('error', () => {});
      // Node names a link-local's scope by ifindex in this process's netns: drop it.
      seen?.push(sock.remoteAddress!.replace(/%.*$/, ''));
      sock.end(reply(sock));
    });
    await new Promise<void>((resolve) => server.listen({ fd }, resolve));
    servers.push(server);
    return server;
  }

  beforeAll(async () => {
    // The switch: a bridge in its own netns, with IPv6 off for the switch itself only (it gets
    // no address; bridged IPv6 frames still pass, as on a node's CNI bridge).
    ip('netns', 'add', SWITCH);
    sysctlIn(SWITCH, 'net.ipv6.conf.all.disable_ipv6=1', 'net.ipv6.conf.default.disable_ipv6=1');
    ip('-n', SWITCH, 'link', 'add', 'br0', 'type', 'bridge');
    ip('-n', SWITCH, 'link', 'set', 'br0', 'up');
    for (const p of PODS) {
      ip('netns', 'add', NS(p));
      // IPv6 on, as a pod on a real node has it; no DAD, so the link-local is usable at once.
      sysctlIn(NS(p), 'net.ipv6.conf.all.disable_ipv6=0', 'net.ipv6.conf.default.disable_ipv6=0', 'net.ipv6.conf.default.accept_dad=0');
      ip('-n', NS(p), 'link', 'set', 'lo', 'up');
      ip('-n', SWITCH, 'link', 'add', `v${p}`, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', NS(p));
      ip('-n', SWITCH, 'link', 'set', `v${p}`, 'master', 'br0');
      ip('-n', SWITCH, 'link', 'set', `v${p}`, 'up');
      ip('-n', NS(p), 'addr', 'add', `${IP[p]}/24`, 'dev', 'eth0');
      ip('-n', NS(p), 'link', 'set', 'eth0', 'up');
      mkdirSync(CG(p), { recursive: true });
    }

    for (const p of PODS) linkLocal[p] = await linkLocalOf(NS(p));

    r = await Redirector.open({ pinRoot });
    await r.attachPod({ uid: 'a', cgroupPath: CG('a'), netnsPath: NETNS('a'), ip: IP.a });
    await r.attachPod({ uid: 'b', cgroupPath: CG('b'), netnsPath: NETNS('b'), ip: IP.b });

    // Every pod's app listens on [::]:8080, dual-stack, as many apps do.
    for (const p of PODS) await serve(NETNS(p), '::', APP_PORT, () => `app-${p}`, accepted[p]);
    // Pod A's outbound capture listener answers with the original destination it recovers.
    await serve(NETNS('a'), '127.0.0.1', 15001, (sock) => {
      const fd = (sock as unknown as { _handle: { fd: number } })._handle.fd;
      return JSON.stringify(r.originalDst(fd));
    });
    // Pod B's inbound plaintext listener: IPv4 to B goes through it.
    const inbound = await serve(NETNS('b'), '127.0.0.1', 15006, () => 'mesh-inbound-b');
    r.registerInboundListener(IP.b, 'plaintext', (inbound as unknown as { _handle: { fd: number } })._handle.fd);
  });

  afterAll(async () => {
    for (const s of servers) if (s.listening) await new Promise<void>((resolve) => s.close(() => resolve()));
    const failures: unknown[] = [];
    const step = async (f: () => unknown) => {
      try {
        await f();
      } catch (err) {
        failures.push(err);
      }
    };
    await step(() => r?.detachPod('a', IP.a));
    await step(() => r?.detachPod('b', IP.b));
    await step(() => r?.close());
    await step(() => Redirector.destroyAll(pinRoot));
    for (const p of PODS) await step(() => ip('netns', 'del', NS(p)));
    await step(() => ip('netns', 'del', SWITCH));
    for (const p of PODS) await step(() => existsSync(CG(p)) && rmdirSync(CG(p)));
    await step(() => existsSync(cgTest) && rmdirSync(cgTest));

    expect(failures).toEqual([]);
    expect(existsSync(pinRoot)).toBe(false);
    expect(readdirSync('/sys/fs/bpf').filter((n) => n.startsWith('nmt-'))).toEqual([]);
    expect(ip('netns', 'list').split('\n').filter((l) => l.startsWith(`nmt-${PID}-`))).toEqual([]);
    expect(existsSync(cgTest)).toBe(false);
  });

  it('lets two pods that are not enrolled talk over link-local IPv6 (the bypass the rule closes)', async () => {
    const res = await client('c', 'c', 'tcp', ll('d'));
    expect(res).toEqual({ outcome: 'ok', data: 'app-d', peer: linkLocal.d });
    expect(accepted.d).toContain(linkLocal.c);
  });

  it("refuses an enrolled pod's native IPv6 TCP connect at once with EPERM, whatever the destination", async () => {
    const before = { b: accepted.b.length, d: accepted.d.length };
    expect(await client('a', 'a', 'tcp', ll('b'))).toEqual({ outcome: 'EPERM' });
    expect(await client('a', 'a', 'tcp', ll('d'))).toEqual({ outcome: 'EPERM' });
    // Refused before routing: an address with no route says EPERM too, not ENETUNREACH.
    expect(await client('a', 'a', 'tcp', 'fd00:6::9')).toEqual({ outcome: 'EPERM' });
    expect(await client('a', 'a', 'tcp', '2001:db8::9')).toEqual({ outcome: 'EPERM' });
    // Its own link-local is native IPv6 too: only ::1 stays open inside the pod.
    expect(await client('a', 'a', 'tcp', ll('a'))).toEqual({ outcome: 'EPERM' });
    expect({ b: accepted.b.length, d: accepted.d.length }).toEqual(before);
    // The same pod over IPv4 reaches D's app through its capture listener (the mesh).
    expect(await client('a', 'a', 'tcp', IP.d)).toEqual({ outcome: 'ok', data: JSON.stringify({ ip: IP.d, port: APP_PORT }), peer: IP.d });
  });

  it('keeps IPv6 loopback working inside an enrolled pod (::1, and :: which means it)', async () => {
    const before = accepted.a.length;
    expect(await client('a', 'a', 'tcp', '::1')).toEqual({ outcome: 'ok', data: 'app-a', peer: '::1' });
    expect(await client('a', 'a', 'tcp', '::')).toEqual({ outcome: 'ok', data: 'app-a', peer: '::1' });
    expect(accepted.a.slice(before)).toEqual(['::1', '::1']);
  });

  it('still captures a v4-mapped destination (::ffff:a.b.c.d) into the mesh', async () => {
    const res = await client('a', 'a', 'tcp', `::ffff:${IP.d}`);
    expect(res).toEqual({ outcome: 'ok', data: JSON.stringify({ ip: IP.d, port: APP_PORT }), peer: `::ffff:${IP.d}` });
  });

  it('leaves UDP over IPv6 alone (the mesh is TCP-only)', async () => {
    let ready!: () => void;
    const isReady = new Promise<void>((resolve) => (ready = resolve));
    const received = python(NETNS('d'), null, PY_UDP_RECEIVER, ['5353'], (l) => l === 'ready' && ready());
    await isReady;
    expect(await client('a', 'a', 'udp', ll('d'), 5353)).toEqual({ outcome: 'sent' });
    expect((await received).trim().split('\n')).toEqual(['ready', 'datagram']);
  });

  it('drops a native IPv6 SYN to an enrolled pod (the client gets a reset), while its IPv4 goes to the mesh', async () => {
    const before = accepted.b.length;
    // C is not enrolled, so nothing stops it outbound: B's sk_lookup answers the SYN.
    expect(await client('c', 'c', 'tcp', ll('b'))).toEqual({ outcome: 'ECONNREFUSED' });
    expect(await client('d', null, 'tcp', ll('b'))).toEqual({ outcome: 'ECONNREFUSED' });
    expect(accepted.b.length).toBe(before);
    // The same listener, over B's IPv4: steered to B's inbound mesh listener, not the app.
    expect(await client('c', 'c', 'tcp', IP.b)).toEqual({ outcome: 'ok', data: 'mesh-inbound-b', peer: IP.b });
    expect(accepted.b.length).toBe(before);
  });

  it("passes the enrolled pod's own IPv6: loopback, and its own link-local from outside its cgroup", async () => {
    const before = accepted.b.length;
    expect(await client('b', 'b', 'tcp', '::1')).toEqual({ outcome: 'ok', data: 'app-b', peer: '::1' });
    // A socket in B's netns but not in B's cgroup (as the agent's are): sk_lookup sees remote == local.
    expect(await client('b', null, 'tcp', ll('b'))).toEqual({ outcome: 'ok', data: 'app-b', peer: linkLocal.b });
    expect(accepted.b.slice(before)).toEqual(['::1', linkLocal.b]);
  });

  it('lets native IPv6 through again once the pods are detached', async () => {
    await r.detachPod('b', IP.b);
    expect(await client('c', 'c', 'tcp', ll('b'))).toEqual({ outcome: 'ok', data: 'app-b', peer: linkLocal.b });
    await r.detachPod('a', IP.a);
    expect(await client('a', 'a', 'tcp', ll('d'))).toEqual({ outcome: 'ok', data: 'app-d', peer: linkLocal.d });
    expect(accepted.d).toContain(linkLocal.a);
  });
});
