// The original-destination maps are shared by every pod of the node, so one pod may hold at
// most its quota of captured connections open: beyond it its new connects fail at once with
// EPERM while other pods connect as before, and the kernel's counters (open entries per pod,
// refusals, evictions) say so. End to end in real namespaces with the real programs.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, rmdirSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, expect, it } from 'vitest';
import { describePrivileged } from '../helpers/privileged.js';
import { Redirector, findCgroup2Root, listenInNetns } from '../../src/redirect/index.js';
import { netnsCookieOfPath } from '../../src/redirect/netns.js';
import { encodeOrigDstKey } from '../../src/redirect/layout.js';
import { kTestHooks } from '../../src/redirect/redirector.js';
import type { OrigDstStats } from '../../src/redirect/types.js';

const PID = process.pid;
const NS = { a: `nmq-${PID}-a`, b: `nmq-${PID}-b` };
const path = (ns: string): string => `/run/netns/${ns}`;
const QUOTA = 3;
/** Any non-loopback destination: the connect is rewritten to the pod's 15001 before routing. */
const DEST = '10.252.0.9';

/**
 * Opens argv[3] connections to argv[1]:argv[2] one after the other, prints one JSON line of
 * outcomes ("ok" or the errno name; "timeout" would be a hang), keeps them open until stdin
 * closes, then closes them and exits.
 */
const PY_HOLD = `
import errno, json, socket, sys
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
held, out = [], []
for _ in range(n):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(5)
    try:
        s.connect((host, port))
        held.append(s)
        out.append('ok')
    except socket.timeout:
        out.append('timeout')
    except OSError as e:
        out.append(errno.errorcode.get(e.errno, str(e.errno)))
print(json.dumps(out), flush=True)
sys.stdin.read()
for s in held:
    s.close()
`;

function ip(...args: string[]): string {
  return execFileSync('ip', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

interface Holder {
  outcomes: string[];
  /** Closes the held connections and waits for the process to exit. */
  release(): Promise<void>;
}

const children: ChildProcess[] = [];

/** Runs PY_HOLD in a pod's cgroup and netns (cgroup first: nsenter would not remount it). */
function hold(cgroup: string, netns: string, n: number): Promise<Holder> {
  return new Promise((resolve, reject) => {
    const child = spawn('sh', ['-c', 'echo $$ > "$1/cgroup.procs" && exec nsenter --net="$2" /usr/bin/python3 -c "$0" "$3" "$4" "$5"', PY_HOLD, cgroup, netns, DEST, '80', String(n)], {
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    children.push(child);
    let out = '';
    let err = '';
    const exited = new Promise<void>((r) => child.once('close', () => r()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      const nl = out.indexOf('\n');
      if (nl < 0) return;
      resolve({
        outcomes: JSON.parse(out.slice(0, nl)) as string[],
        release: async () => {
          child.stdin.end();
          await exited;
        },
      });
    });
    child.once('close', (code) => reject(new Error(`holder exited ${code} before reporting: ${err.trim()}`)));
  });
}

async function waitFor(what: string, cond: () => boolean): Promise<void> {
  for (let i = 0; i < 200; i++) {
    if (cond()) return;
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`timed out waiting for ${what}`);
}

describePrivileged('the per-pod quota and counters of the original-destination maps', () => {
  const pinRoot = `/sys/fs/bpf/nmt-quota-${PID}`;
  let cgTest = '';
  let cg: { a: string; b: string };
  let cookie: { a: bigint; b: bigint };
  let r: Redirector;
  const servers: Server[] = [];
  /** Connections the outbound listener of pod A accepted, by client port. */
  const acceptedA = new Map<number, Socket>();

  const pod = (s: OrigDstStats, c: bigint) => s.pods.find((p) => p.netnsCookie === c.toString()) ?? { entries: 0, refused: 0 };

  /** The agent's outbound listener in a pod's netns: accepts, and closes when the client does. */
  async function outbound(netns: string, seen?: Map<number, Socket>): Promise<void> {
    const fd = await listenInNetns(netns, { host: '127.0.0.1', port: 15001 });
    const server = createServer((sock) => {
      sock.on('error', () => {});
      seen?.set(sock.remotePort!, sock);
    });
    await new Promise<void>((resolve) => server.listen({ fd }, resolve));
    servers.push(server);
  }

  beforeAll(async () => {
    for (const n of Object.values(NS)) {
      ip('netns', 'add', n);
      ip('-n', n, 'link', 'set', 'lo', 'up');
    }
    cgTest = join(findCgroup2Root(), `nodemesh-quota-${PID}`);
    cg = { a: join(cgTest, 'poda'), b: join(cgTest, 'podb') };
    mkdirSync(cg.a, { recursive: true });
    mkdirSync(cg.b, { recursive: true });
    cookie = { a: await netnsCookieOfPath(path(NS.a)), b: await netnsCookieOfPath(path(NS.b)) };
    r = await Redirector.open({ pinRoot, origDstPodQuota: QUOTA });
    await r.attachPod({ uid: 'a', cgroupPath: cg.a, netnsPath: path(NS.a), ip: '10.252.0.1' });
    await r.attachPod({ uid: 'b', cgroupPath: cg.b, netnsPath: path(NS.b), ip: '10.252.0.2' });
    await outbound(path(NS.a), acceptedA);
    await outbound(path(NS.b));
  });

  afterEach(() => {
    for (const c of children.splice(0)) if (c.exitCode === null) c.kill('SIGKILL');
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
    await step(() => r?.detachPod('a'));
    await step(() => r?.detachPod('b'));
    await step(() => r?.close());
    await step(() => Redirector.destroyAll(pinRoot));
    for (const n of Object.values(NS)) await step(() => ip('netns', 'del', n));
    for (const d of [cg.a, cg.b, cgTest]) await step(() => existsSync(d) && rmdirSync(d));
    expect(failures).toEqual([]);
    expect(existsSync(pinRoot)).toBe(false);
  });

  it('refuses a pod its connects beyond the quota with EPERM at once, while another pod connects, and counts it', async () => {
    const before = r.origDstStats();
    expect(before.podQuota).toBe(QUOTA);
    expect(before.capacity).toBe(65536);

    const first = await hold(cg.a, path(NS.a), QUOTA);
    expect(first.outcomes).toEqual(['ok', 'ok', 'ok']);
    let s = r.origDstStats();
    expect(pod(s, cookie.a)).toMatchObject({ entries: QUOTA, refused: 0, uid: 'a' });
    expect(s.entries).toBe(before.entries + QUOTA);

    // Over the quota: refused at once (EPERM), never a hang.
    const over = await hold(cg.a, path(NS.a), 2);
    expect(over.outcomes).toEqual(['EPERM', 'EPERM']);
    s = r.origDstStats();
    expect(pod(s, cookie.a)).toMatchObject({ entries: QUOTA, refused: 2 });
    expect(s.counters.quotaRefused).toBe(before.counters.quotaRefused + 2);

    // Another pod is not affected by A's quota.
    const other = await hold(cg.b, path(NS.b), QUOTA);
    expect(other.outcomes).toEqual(['ok', 'ok', 'ok']);
    expect(pod(r.origDstStats(), cookie.b)).toMatchObject({ entries: QUOTA, refused: 0 });

    // Once A's connections close, it connects again: the quota counts open connections only.
    await Promise.all([first.release(), over.release(), other.release()]);
    await waitFor('pod A\'s entries to drain', () => pod(r.origDstStats(), cookie.a).entries === 0 && pod(r.origDstStats(), cookie.b).entries === 0);
    const again = await hold(cg.a, path(NS.a), 1);
    expect(again.outcomes).toEqual(['ok']);
    await again.release();
    s = r.origDstStats();
    expect(s.counters.captured - before.counters.captured).toBe(2 * QUOTA + 1);
    expect(s.counters.recordFailed).toBe(before.counters.recordFailed);
  });

  it('counts an entry evicted from under an open connection when it closes, and nothing for a normal close', async () => {
    await waitFor('no open entry of pod A', () => pod(r.origDstStats(), cookie.a).entries === 0);
    const before = r.origDstStats();
    acceptedA.clear();
    const h = await hold(cg.a, path(NS.a), 2);
    expect(h.outcomes).toEqual(['ok', 'ok']);
    await waitFor('both accepted', () => acceptedA.size >= 2);
    // Play the LRU: delete the nm_orig_dst entry of one of the two open connections.
    const hooks = r[kTestHooks]();
    const ports = [...acceptedA.keys()];
    expect(hooks.binding.mapDelete(hooks.mapFd('nm_orig_dst'), encodeOrigDstKey(cookie.a, '127.0.0.1', ports[0]!))).toBe(true);
    // The other entry is there: the twin, whose close is a normal one.
    expect(hooks.binding.mapLookup(hooks.mapFd('nm_orig_dst'), encodeOrigDstKey(cookie.a, '127.0.0.1', ports[1]!))).not.toBeNull();
    for (const p of ports) acceptedA.get(p)!.end();
    await h.release();
    await waitFor('both closed', () => r.origDstStats().counters.closed >= before.counters.closed + 2);
    const s = r.origDstStats();
    expect(s.counters.evictedOrig - before.counters.evictedOrig).toBe(1);
    expect(s.counters.evictedCookie).toBe(before.counters.evictedCookie);
    expect(s.counters.established - before.counters.established).toBe(2);
    expect(pod(s, cookie.a).entries).toBe(0);
  });

  it('removes a pod\'s counters with the pod, by its netns cookie, and keeps the other pod\'s', async () => {
    expect(r.origDstStats().pods.map((p) => p.netnsCookie).sort()).toEqual([cookie.a, cookie.b].map(String).sort());
    await r.detachPod('b');
    expect(r.origDstStats().pods.map((p) => p.netnsCookie)).toEqual([cookie.a.toString()]);
  });
});
