// End to end in real network namespaces: two "pods" joined by a veth pair, each with its
// own cgroup, captured by the real programs. Outbound connects from pod A are rewritten to
// A's 127.0.0.1:15001 listener with the original destination recoverable; inbound SYNs to
// pod B are steered to B's 15006 listener, and dropped once it is gone (fail closed).
import { spawn, execFileSync } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, readdirSync, rmdirSync, statSync } from 'node:fs';
import { createServer, Socket, type Server } from 'node:net';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, expect, it } from 'vitest';
import { describePrivileged } from '../helpers/privileged.js';
import { Redirector, findCgroup2Root, listenInNetns, socketsInNetns } from '../../src/redirect/index.js';
import { netnsCookie, netnsCookieOfPath, socketInNetns } from '../../src/redirect/netns.js';
import { POD_LINK_NAMES, type SocketAddress } from '../../src/redirect/types.js';

const PID = process.pid;
const NS_A = `nmt-${PID}-a`;
const NS_B = `nmt-${PID}-b`;
const NETNS_A = `/run/netns/${NS_A}`;
const NETNS_B = `/run/netns/${NS_B}`;
const NS_C = `nmt-${PID}-c`;
const NETNS_C = `/run/netns/${NS_C}`;
const IP_A = '10.250.0.1';
const IP_B = '10.250.0.2';
/** A second address on B's interface: not enrolled, and inside A's excluded CIDR. */
const IP_B_EXTRA = '10.250.0.200';

/** Connects, prints {peer, data} as JSON after reading until EOF. argv: host port. */
const PY_CLIENT = `
import json, socket, sys
host, port = sys.argv[1], int(sys.argv[2])
s = socket.socket(socket.AF_INET6 if ':' in host else socket.AF_INET, socket.SOCK_STREAM)
s.settimeout(10)
s.connect((host, port))
peer = s.getpeername()
data = b''
while True:
    chunk = s.recv(4096)
    if not chunk:
        break
    data += chunk
print(json.dumps({'peer': [peer[0], peer[1]], 'data': data.decode()}))
`;

function ip(...args: string[]): string {
  return execFileSync('ip', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

function fdOf(handleOwner: Server | Socket): number {
  return (handleOwner as unknown as { _handle: { fd: number } })._handle.fd;
}

/** Runs PY_CLIENT inside a cgroup and a netns; joins the cgroup before entering the netns. */
function runClient(cgroup: string, netns: string, host: string, port: number): Promise<{ peer: [string, number]; data: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(
      'sh',
      ['-c', 'echo $$ > "$1/cgroup.procs" && exec nsenter --net="$2" /usr/bin/python3 -c "$0" "$3" "$4"', PY_CLIENT, cgroup, netns, host, String(port)],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
    child.on('close', (code) => {
      clearTimeout(timer);
      if (code === 0) resolve(JSON.parse(out) as { peer: [string, number]; data: string });
      else reject(new Error(`client to ${host}:${port} exited ${code}: ${err.trim()}`));
    });
  });
}

interface Accepted {
  local: SocketAddress;
  remote: SocketAddress;
  originalDst?: SocketAddress | null;
}

/** A server on an fd made in a netns; answers each connection with `reply(sock)` and ends. */
async function serveOn(fd: number, reply: (sock: Socket) => string): Promise<{ server: Server; accepted: Accepted[] }> {
  const accepted: Accepted[] = [];
  const server = createServer((sock) => {
    sock.on('error', () => {});
    sock.end(reply(sock));
  });
  server.on('connection', (sock) => {
    accepted.push({
      local: { ip: sock.localAddress!, port: sock.localPort! },
      remote: { ip: sock.remoteAddress!, port: sock.remotePort! },
    });
  });
  await new Promise<void>((resolve) => server.listen({ fd }, resolve));
  return { server, accepted };
}

describePrivileged('in-pod redirection between two network namespaces', () => {
  const pinRoot = `/sys/fs/bpf/nmt-redirect-${PID}`;
  let cgTest = '';
  let cgA = '';
  let cgB = '';
  let r: Redirector;
  const servers: Server[] = [];
  const sockets: Socket[] = [];

  // The outbound (15001) listener in A consults whichever Redirector is current.
  let current: () => Redirector;
  const outboundSeen: Accepted[] = [];

  async function serve(netns: string, host: string, port: number, reply: (sock: Socket) => string) {
    const fd = await listenInNetns(netns, { host, port });
    const s = await serveOn(fd, reply);
    servers.push(s.server);
    return s;
  }

  beforeAll(async () => {
    ip('netns', 'add', NS_A);
    ip('netns', 'add', NS_B);
    ip('netns', 'add', NS_C);
    ip('-n', NS_A, 'link', 'set', 'lo', 'up');
    ip('-n', NS_B, 'link', 'set', 'lo', 'up');
    // Created inside A with its peer inside B: the pair never appears in the root netns.
    ip('-n', NS_A, 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', NS_B);
    ip('-n', NS_A, 'addr', 'add', `${IP_A}/24`, 'dev', 'eth0');
    ip('-n', NS_B, 'addr', 'add', `${IP_B}/24`, 'dev', 'eth0');
    ip('-n', NS_B, 'addr', 'add', `${IP_B_EXTRA}/24`, 'dev', 'eth0');
    ip('-n', NS_A, 'link', 'set', 'eth0', 'up');
    ip('-n', NS_B, 'link', 'set', 'eth0', 'up');

    cgTest = join(findCgroup2Root(), `nodemesh-test-${PID}`);
    cgA = join(cgTest, 'poda'); // pod<uid>
    cgB = join(cgTest, 'podb');
    mkdirSync(cgA, { recursive: true });
    mkdirSync(cgB, { recursive: true });

    r = await Redirector.open({ pinRoot });
    current = () => r;
    await r.attachPod({
      uid: 'a',
      cgroupPath: cgA,
      netnsPath: NETNS_A,
      ip: IP_A,
      excludeOutboundPorts: [8081],
      excludeOutboundCidrs: ['10.250.0.192/26'],
    });
    await r.attachPod({ uid: 'b', cgroupPath: cgB, netnsPath: NETNS_B, ip: IP_B, excludeInboundPorts: [8081, 8082] });

    // The proxy side of pod A: the outbound capture listener, inside A's netns.
    const outbound = await serve(NETNS_A, '127.0.0.1', 15001, (sock) => {
      const dst = current().originalDst(fdOf(sock));
      outboundSeen.push({ local: { ip: sock.localAddress!, port: sock.localPort! }, remote: { ip: sock.remoteAddress!, port: sock.remotePort! }, originalDst: dst });
      return JSON.stringify(dst);
    });
    void outbound;
  });

  afterEach(() => {
    for (const s of sockets.splice(0)) s.destroy();
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
    await step(() => r?.detachPod('a', IP_A));
    await step(() => r?.detachPod('b', IP_B));
    await step(() => r?.close());
    await step(() => Redirector.destroyAll(pinRoot));
    await step(() => ip('netns', 'del', NS_A));
    await step(() => ip('netns', 'del', NS_B));
    await step(() => ip('netns', 'del', NS_C));
    const cgDirs = existsSync(cgTest) ? readdirSync(cgTest, { withFileTypes: true }).filter((d) => d.isDirectory()).map((d) => join(cgTest, d.name)) : [];
    for (const d of [...cgDirs, cgTest]) await step(() => existsSync(d) && rmdirSync(d));

    expect(failures).toEqual([]);
    expect(existsSync(pinRoot)).toBe(false);
    expect(readdirSync('/sys/fs/bpf').filter((n) => n.startsWith('nmt-'))).toEqual([]);
    expect(ip('netns', 'list').split('\n').filter((l) => l.startsWith(`nmt-${PID}-`))).toEqual([]);
    expect(existsSync(cgTest)).toBe(false);
  });

  it('captures a TCP connect from pod A and recovers the original destination', async () => {
    const app = await serve(NETNS_B, '0.0.0.0', 8080, () => 'app8080');
    const before = outboundSeen.length;
    const res = await runClient(cgA, NETNS_A, IP_B, 8080);
    expect(JSON.parse(res.data)).toEqual({ ip: IP_B, port: 8080 });
    // getpeername in the app shows the original peer, not 127.0.0.1:15001.
    expect(res.peer).toEqual([IP_B, 8080]);
    const seen = outboundSeen.slice(before);
    expect(seen).toHaveLength(1);
    expect(seen[0]!.remote.ip).toBe('127.0.0.1');
    expect(app.accepted).toHaveLength(0);
  });

  it('captures a v4-mapped IPv6 connect (::ffff:a.b.c.d) the same way', async () => {
    const res = await runClient(cgA, NETNS_A, `::ffff:${IP_B}`, 8080);
    expect(JSON.parse(res.data)).toEqual({ ip: IP_B, port: 8080 });
    expect(res.peer).toEqual([`::ffff:${IP_B}`, 8080]);
  });

  it('keys the original destination by the pod netns cookie, as SO_NETNS_COOKIE reports it', async () => {
    const fd = await socketInNetns(NETNS_A);
    try {
      expect(netnsCookie(fd)).toBe(await netnsCookieOfPath(NETNS_A));
      expect(netnsCookie(fd)).not.toBe(await netnsCookieOfPath(NETNS_B));
    } finally {
      closeSync(fd);
    }
  });

  it('makes a batch of sockets in one visit, every one of them in the pod netns', async () => {
    const fds = await socketsInNetns(NETNS_A, 16);
    try {
      expect(new Set(fds).size).toBe(16);
      const cookie = await netnsCookieOfPath(NETNS_A);
      for (const fd of fds) expect(netnsCookie(fd)).toBe(cookie);
    } finally {
      for (const fd of fds) closeSync(fd);
    }
  });

  it('leaves loopback destinations alone', async () => {
    await serve(NETNS_A, '127.0.0.1', 7777, () => 'loopback');
    const before = outboundSeen.length;
    const res = await runClient(cgA, NETNS_A, '127.0.0.1', 7777);
    expect(res).toEqual({ peer: ['127.0.0.1', 7777], data: 'loopback' });
    expect(outboundSeen.length).toBe(before);
  });

  it('leaves an excluded destination port alone (and B passes its excluded inbound port)', async () => {
    const app = await serve(NETNS_B, '0.0.0.0', 8081, () => 'app8081');
    const before = outboundSeen.length;
    const res = await runClient(cgA, NETNS_A, IP_B, 8081);
    expect(res).toEqual({ peer: [IP_B, 8081], data: 'app8081' });
    expect(outboundSeen.length).toBe(before);
    expect(app.accepted.map((a) => a.remote.ip)).toEqual([IP_A]);
  });

  it('leaves an excluded destination CIDR alone (and B passes a local IP that is not enrolled)', async () => {
    const before = outboundSeen.length;
    const res = await runClient(cgA, NETNS_A, IP_B_EXTRA, 8080);
    expect(res).toEqual({ peer: [IP_B_EXTRA, 8080], data: 'app8080' });
    expect(outboundSeen.length).toBe(before);
  });

  it('steers an inbound SYN for pod B to its 15006 listener (local address = original destination), and refuses it once the listener is gone', async () => {
    const app = await serve(NETNS_B, '0.0.0.0', 9999, () => 'app9999');
    const inbound = await serve(NETNS_B, '127.0.0.1', 15006, () => 'inbound');
    r.registerInboundListener(IP_B, 'plaintext', fdOf(inbound.server));

    // Made in A's netns by this process, so it is in no pod cgroup: connect4 leaves it alone.
    const fd = await socketInNetns(NETNS_A);
    const client = new Socket({ fd });
    sockets.push(client);
    const data = await new Promise<string>((resolve, reject) => {
      let got = '';
      client.on('data', (d: Buffer) => (got += d.toString()));
      client.on('end', () => resolve(got));
      client.on('error', reject);
      client.connect(9999, IP_B);
    });
    expect(data).toBe('inbound');
    expect(inbound.accepted).toHaveLength(1);
    expect(inbound.accepted[0]!.local).toEqual({ ip: IP_B, port: 9999 });
    expect(inbound.accepted[0]!.remote.ip).toBe(IP_A);
    expect(app.accepted).toHaveLength(0);

    // Fail closed: once the listener is gone the app must not get the connection. sk_lookup
    // answers SK_DROP, which the kernel turns into a failed lookup (ERR_PTR(-ECONNREFUSED),
    // bpf_sk_lookup_run_v4 in include/linux/filter.h), so TCP refuses the SYN with an RST:
    // the client fails fast instead of retransmitting into a timeout.
    await new Promise<void>((resolve) => inbound.server.close(() => resolve()));
    expect(r.unregisterInboundListener(IP_B, 'plaintext')).toBe(false); // the kernel already removed it
    const fd2 = await socketInNetns(NETNS_A);
    const probe = new Socket({ fd: fd2 });
    sockets.push(probe);
    const outcome = await new Promise<string>((resolve) => {
      const timer = setTimeout(() => resolve('no answer'), 5000);
      probe.on('connect', () => {
        clearTimeout(timer);
        resolve('connected');
      });
      probe.on('error', (err: NodeJS.ErrnoException) => {
        clearTimeout(timer);
        resolve(err.code ?? 'error');
      });
      probe.connect(9999, IP_B);
    });
    expect(outcome).toBe('ECONNREFUSED');
    expect(app.accepted).toHaveLength(0);
  });

  it('refuses to register a listener made in another netns than the pod (it would be a black hole)', async () => {
    const fd = await listenInNetns(NETNS_A, { host: '127.0.0.1', port: 15006 });
    try {
      expect(() => r.registerInboundListener(IP_B, 'plaintext', fd)).toThrow(expect.objectContaining({ code: 'NM_ERR_ENROLL' }));
    } finally {
      closeSync(fd);
    }
  });

  it('adopts pinned links after a restart: a new Redirector updates them instead of attaching twice', async () => {
    const { native } = await import('../../src/redirect/native.js');
    const pins = POD_LINK_NAMES.map((name) => join(pinRoot, 'pods', 'a', name));
    const before = pins.map((pin) => native().linkInfo(pin)!);
    expect(before.every((l) => l !== null)).toBe(true);

    r.close();
    const r2 = await Redirector.open({ pinRoot });
    r = r2;
    expect(r2.listPinnedPods()).toEqual(['a', 'b']);
    await r2.attachPod({
      uid: 'a',
      cgroupPath: cgA,
      netnsPath: NETNS_A,
      ip: IP_A,
      excludeOutboundPorts: [8081],
      excludeOutboundCidrs: ['10.250.0.192/26'],
    });
    const after = pins.map((pin) => native().linkInfo(pin)!);
    // Same links (cgroup ones and the netns one), now running the newly loaded programs.
    expect(after.map((l) => l.id)).toEqual(before.map((l) => l.id));
    after.forEach((l, i) => expect(l.progId).not.toBe(before[i]!.progId));
    expect(r2.podAttachment('a')?.links).toEqual([...POD_LINK_NAMES]);

    const res = await runClient(cgA, NETNS_A, IP_B, 8080);
    expect(JSON.parse(res.data)).toEqual({ ip: IP_B, port: 8080 });
  });

  it('re-attaches the links of a pod whose cgroup was replaced, and keeps its netns link', async () => {
    const { native } = await import('../../src/redirect/native.js');
    const cg1 = join(cgTest, 'podc1');
    const cg2 = join(cgTest, 'podc2');
    mkdirSync(cg1);
    const spec = { uid: 'c', cgroupPath: cg1, netnsPath: NETNS_C, ip: '10.250.0.3' };
    await r.attachPod(spec);
    const connect4 = join(pinRoot, 'pods', 'c', 'connect4');
    const skLookup = join(pinRoot, 'pods', 'c', 'sk_lookup');
    const before = { connect4: native().linkInfo(connect4)!, skLookup: native().linkInfo(skLookup)! };
    expect(before.connect4.cgroupId).toBe(statSync(cg1, { bigint: true }).ino);
    expect(BigInt(before.skLookup.netnsIno)).toBe(statSync(NETNS_C, { bigint: true }).ino);

    rmdirSync(cg1);
    mkdirSync(cg2);
    await r.attachPod({ ...spec, cgroupPath: cg2 });
    const after = { connect4: native().linkInfo(connect4)!, skLookup: native().linkInfo(skLookup)! };
    expect(after.connect4.id).not.toBe(before.connect4.id);
    expect(after.connect4.cgroupId).toBe(statSync(cg2, { bigint: true }).ino);
    expect(after.skLookup.id).toBe(before.skLookup.id);

    await r.detachPod('c', spec.ip);
    expect(r.podAttachment('c')).toBeNull();
    rmdirSync(cg2);
  });

  it('stops capturing once the pod is detached', async () => {
    await r.detachPod('a', IP_A);
    expect(existsSync(join(pinRoot, 'pods', 'a'))).toBe(false);
    expect(r.listPinnedPods()).toEqual(['b']);
    // 8082 is excluded inbound on B but not outbound on A: only the detach lets it through.
    await serve(NETNS_B, '0.0.0.0', 8082, () => 'app8082');
    const before = outboundSeen.length;
    const res = await runClient(cgA, NETNS_A, IP_B, 8082);
    expect(res).toEqual({ peer: [IP_B, 8082], data: 'app8082' });
    expect(outboundSeen.length).toBe(before);
  });
});
