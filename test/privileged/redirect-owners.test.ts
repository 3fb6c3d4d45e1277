// Map entries are deleted by their owner: when pod A's IP is given to pod B (another netns, a
// newer pod), detaching A, by the process that attached it or by a restarted one reading
// nm_pod_owner, leaves B's nm_enrolled, nm_pod_cfg and nm_listeners entries and B's inbound
// steering in place; detaching B then removes them.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, rmdirSync } from 'node:fs';
import { createServer, Socket, type Server } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { describePrivileged } from '../helpers/privileged.js';
import { Redirector, findCgroup2Root, listenInNetns } from '../../src/redirect/index.js';
import { netnsCookieOfPath, socketInNetns } from '../../src/redirect/netns.js';
import { decodeEnrolled, decodePodCfg, encodeListenerKey, ipv4Key, podOwnerKey, u64, NM_LISTENER_PLAINTEXT } from '../../src/redirect/layout.js';
import { kTestHooks } from '../../src/redirect/redirector.js';

const PID = process.pid;
const NS = { a: `nmo-${PID}-a`, b: `nmo-${PID}-b`, c: `nmo-${PID}-c` };
const path = (ns: string): string => `/run/netns/${ns}`;
/** The IP pod A had and pod B was given; B's netns really has it, on a veth to C (the client). */
const IP_X = '10.251.0.2';
const IP_CLIENT = '10.251.0.1';
/** The same story for the in-process case, map entries only. */
const IP_Y = '10.251.0.77';

function ip(...args: string[]): string {
  return execFileSync('ip', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

function fdOf(s: Server): number {
  return (s as unknown as { _handle: { fd: number } })._handle.fd;
}

async function serve(netns: string, host: string, port: number, reply: string): Promise<Server> {
  const fd = await listenInNetns(netns, { host, port });
  const server = createServer((sock) => {
    sock.on('error', () => {});
    sock.end(reply);
  });
  await new Promise<void>((resolve) => server.listen({ fd }, resolve));
  return server;
}

/** Connects from the client netns (no pod cgroup) to IP_X:port: what answered, or the errno. */
async function dial(port: number): Promise<string> {
  const sock = new Socket({ fd: await socketInNetns(path(NS.c)) });
  return new Promise<string>((resolve) => {
    let got = '';
    const timer = setTimeout(() => {
      sock.destroy();
      resolve('no answer');
    }, 5000);
    sock.on('data', (d: Buffer) => (got += d.toString()));
    sock.on('end', () => {
      clearTimeout(timer);
      sock.destroy();
      resolve(got);
    });
    sock.on('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      resolve(err.code ?? 'error');
    });
    sock.connect(port, IP_X);
  });
}

describePrivileged('map entries are deleted by their owner when a pod IP is reused', () => {
  const pinRoot = `/sys/fs/bpf/nmt-owners-${PID}`;
  let cgTest = '';
  let cgA = '';
  let cgB = '';
  let r: Redirector;
  const servers: Server[] = [];
  let cookie: { a: bigint; b: bigint };

  /** The pinned maps as any process sees them. */
  function maps(red: Redirector) {
    const h = red[kTestHooks]();
    const look = (name: string, key: Buffer) => h.binding.mapLookup(h.mapFd(name), key);
    return {
      enrolledCookie: (ipAddr: string) => {
        const v = look('nm_enrolled', ipv4Key(ipAddr));
        return v ? decodeEnrolled(v).netnsCookie : null;
      },
      podCfgIp: (c: bigint) => {
        const v = look('nm_pod_cfg', u64(c));
        return v ? decodePodCfg(v).podIp : null;
      },
      listener: (ipAddr: string) => look('nm_listeners', encodeListenerKey(ipAddr, NM_LISTENER_PLAINTEXT)) !== null,
      owner: (uid: string) => look('nm_pod_owner', podOwnerKey(uid)) !== null,
    };
  }

  beforeAll(async () => {
    for (const n of Object.values(NS)) ip('netns', 'add', n);
    for (const n of Object.values(NS)) ip('-n', n, 'link', 'set', 'lo', 'up');
    ip('-n', NS.c, 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', NS.b);
    ip('-n', NS.c, 'addr', 'add', `${IP_CLIENT}/24`, 'dev', 'eth0');
    ip('-n', NS.b, 'addr', 'add', `${IP_X}/24`, 'dev', 'eth0');
    ip('-n', NS.c, 'link', 'set', 'eth0', 'up');
    ip('-n', NS.b, 'link', 'set', 'eth0', 'up');
    cgTest = join(findCgroup2Root(), `nodemesh-owners-${PID}`);
    cgA = join(cgTest, 'poda');
    cgB = join(cgTest, 'podb');
    mkdirSync(cgA, { recursive: true });
    mkdirSync(cgB, { recursive: true });
    cookie = { a: await netnsCookieOfPath(path(NS.a)), b: await netnsCookieOfPath(path(NS.b)) };
    r = await Redirector.open({ pinRoot });
    // The app of pod B, and the agent's inbound listener inside B's netns.
    servers.push(await serve(path(NS.b), '0.0.0.0', 9999, 'app'));
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
    await step(() => r?.close());
    await step(() => Redirector.destroyAll(pinRoot));
    for (const n of Object.values(NS)) await step(() => ip('netns', 'del', n));
    for (const d of [cgA, cgB, cgTest]) await step(() => existsSync(d) && rmdirSync(d));
    expect(failures).toEqual([]);
    expect(existsSync(pinRoot)).toBe(false);
    expect(ip('netns', 'list').split('\n').filter((l) => l.startsWith(`nmo-${PID}-`))).toEqual([]);
  });

  it('detaching pod A in the process that attached it leaves pod B, given the same IP, its entries', async () => {
    await r.attachPod({ uid: 'c', cgroupPath: cgA, netnsPath: path(NS.a), ip: IP_Y });
    await r.attachPod({ uid: 'd', cgroupPath: cgB, netnsPath: path(NS.b), ip: IP_Y });
    const m = maps(r);
    expect(m.enrolledCookie(IP_Y)).toBe(cookie.b);
    expect(m.podCfgIp(cookie.a)).toBe(IP_Y);

    await r.detachPod('c', IP_Y);
    expect(r.podAttachment('c')).toBeNull();
    expect(m.podCfgIp(cookie.a)).toBeNull(); // A's own entry went
    expect(m.enrolledCookie(IP_Y)).toBe(cookie.b); // B's stayed
    expect(m.podCfgIp(cookie.b)).toBe(IP_Y);
    expect(m.owner('c')).toBe(false);
    expect(m.owner('d')).toBe(true);

    // The twin: B's own detach removes them.
    await r.detachPod('d', IP_Y);
    expect(m.enrolledCookie(IP_Y)).toBeNull();
    expect(m.podCfgIp(cookie.b)).toBeNull();
    expect(m.owner('d')).toBe(false);
  });

  it('detaching pod A after a restart (from nm_pod_owner) leaves pod B its entries and its steering; detaching B removes them', async () => {
    await r.attachPod({ uid: 'a', cgroupPath: cgA, netnsPath: path(NS.a), ip: IP_X });
    await r.attachPod({ uid: 'b', cgroupPath: cgB, netnsPath: path(NS.b), ip: IP_X });
    const inbound = await serve(path(NS.b), '127.0.0.1', 15006, 'inbound');
    servers.push(inbound);
    r.registerInboundListener(IP_X, 'plaintext', fdOf(inbound));
    expect(await dial(9999)).toBe('inbound'); // B is steered

    // A restarted agent knows neither pod: the owner records say which netns each UID had.
    r.close();
    r = await Redirector.open({ pinRoot });
    const m = maps(r);
    await r.detachPod('a');
    expect(r.podAttachment('a')).toBeNull();
    expect(m.podCfgIp(cookie.a)).toBeNull();
    expect(m.enrolledCookie(IP_X)).toBe(cookie.b);
    expect(m.podCfgIp(cookie.b)).toBe(IP_X);
    expect(m.listener(IP_X)).toBe(true);
    expect(r.isInboundListener(IP_X, 'plaintext', fdOf(inbound))).toBe(true);
    expect(r.podAttachment('b')?.links).toHaveLength(6);
    expect(await dial(9999)).toBe('inbound'); // still steered to B's listener, not the app

    // The twin: detaching B (also unknown to this process) removes what B owns.
    await r.detachPod('b');
    expect(m.enrolledCookie(IP_X)).toBeNull();
    expect(m.podCfgIp(cookie.b)).toBeNull();
    expect(m.listener(IP_X)).toBe(false);
    expect(m.owner('b')).toBe(false);
    expect(await dial(9999)).toBe('app'); // no longer captured: the app answers itself
  });

  it('leaves no pod pin behind once both pods are detached', () => {
    expect(readdirSync(join(pinRoot, 'pods'))).toEqual([]);
  });
});
