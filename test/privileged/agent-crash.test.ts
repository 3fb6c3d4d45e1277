// No pod can crash the node agent (issue 8, repro 1): examples/demo with the control plane, and
// a pod that connects and resets at once (SO_LINGER {1, 0}) thousands of times, through the
// outbound listener (demo/client → web, captured on 15001) and the inbound one (legacy-client,
// outside the mesh → web, steered to 15006). Before the accept boundary the first storm took the
// agent down (ENOTCONN from getpeername in the original-destination lookup, thrown in the accept
// handler) and the second did too (the reset peer became srcIp '' and authorization's rejection
// was unhandled). Now the same agent process survives, stays ready, counts what it dropped, and
// still serves the normal requests of the positive twins.
import { existsSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { agentPid } from '../../src/cluster/up.js';
import { PORTS } from '../../src/net/index.js';
import { fixtureBin, leftovers, meshUp, repoRoot, type Mesh, processAlive } from '../helpers/mesh.js';
import { describePrivileged } from '../helpers/privileged.js';

const resetLoop = join(fixtureBin, 'nm_reset_loop.py');
const METRICS = `http://127.0.0.1:${PORTS.metrics}/metrics`;
const READY = `http://127.0.0.1:${PORTS.ready}/healthz/ready`;
/** The count; each storm also stops by itself after this many seconds. */
const STORM = { count: 3000, seconds: 60 };

/** Sum of nodemesh_connection_errors_total over every reason, for one listener direction. */
async function contained(direction: 'outbound' | 'inbound'): Promise<number> {
  // A fresh connection per poll: a reused keep-alive socket can meet the server's idle close
  // (undici's 'other side closed'), which says nothing about the agent.
  const text = await (await fetch(METRICS, { headers: { connection: 'close' } })).text();
  let n = 0;
  for (const m of text.matchAll(/^nodemesh_connection_errors_total\{([^}]*)\} (\S+)$/gm)) {
    if (m[1]!.includes(`direction="${direction}"`)) n += Number(m[2]);
  }
  return n;
}

describePrivileged('a pod that resets its connections cannot crash the agent', () => {
  let mesh: Mesh;
  let pid: number;
  let web: string;
  let nginxTempDirs: string[] = [];
  /** What other runs left on this shared host before ours: ours must add nothing to it. */
  let before: string[] = [];

  /** A plain HTTP GET from a pod to web:8080; the status code, or curl's error. */
  const curl = (from: string): string => {
    const r = mesh.exec(from, ['curl', '-sS', '-o', '/dev/null', '-w', '%{http_code}', '--max-time', '10', `http://${web}:8080/`], 30_000);
    return r.code === 0 ? r.stdout : `curl exit ${r.code}: ${r.stderr.trim()}`;
  };

  const storm = (from: string): Record<string, number> => {
    const r = mesh.exec(from, ['python3', resetLoop, web, '8080', String(STORM.count), String(STORM.seconds)], (STORM.seconds + 30) * 1000);
    const line = r.stdout.trim().split('\n').at(-1) ?? '';
    try {
      return JSON.parse(line) as Record<string, number>;
    } catch {
      throw new Error(`the reset loop in ${from} printed no result (exit ${r.code}): ${r.stdout}${r.stderr}`);
    }
  };

  /** Waits until the agent has worked through the storm: the counter holds still for 0.5 s (at most 15 s). */
  const settle = async (direction: 'outbound' | 'inbound'): Promise<number> => {
    let last = await contained(direction);
    for (let i = 0; i < 30; i++) {
      await new Promise((r) => setTimeout(r, 500));
      const now = await contained(direction);
      if (now === last) return now;
      last = now;
    }
    return last;
  };

  const healthy = async (): Promise<void> => {
    expect(processAlive(pid)).toBe(true);
    expect(agentPid(mesh.sd)).toBe(pid);
    expect((await fetch(READY, { headers: { connection: 'close' } })).status).toBe(200);
  };

  beforeAll(async () => {
    nginxTempDirs = ['body', 'proxy', 'fastcgi', 'uwsgi', 'scgi'].map((k) => `/tmp/nodemesh-demo-web-${k}`).filter((d) => !existsSync(d));
    before = leftovers();
    mesh = await meshUp(join(repoRoot, 'examples', 'demo'), { controlPlane: true });
    pid = agentPid(mesh.sd)!;
    web = mesh.ip('demo/web');
  });

  afterAll(async () => {
    await mesh?.down();
    for (const d of nginxTempDirs) rmSync(d, { recursive: true, force: true });
    if (mesh) expect(leftovers(mesh.pinRoot).filter((l) => !before.includes(l))).toEqual([]);
  });

  it('serves web to a mesh client and to a client outside the mesh before any storm', async () => {
    expect(pid).toBeGreaterThan(0);
    expect(curl('demo/client')).toBe('200');
    expect(curl('legacy/legacy-client')).toBe('200');
    await healthy();
  });

  it('survives a storm of connects reset at once through the outbound listener, and still serves', async () => {
    const before = await contained('outbound');
    const r = storm('demo/client');
    expect(r.connected).toBeGreaterThan(0);
    // Accepted after every connection of the storm: the agent has been through all of them.
    expect(curl('demo/client')).toBe('200');
    const after = await settle('outbound');
    await healthy();
    // The storm's connections were dropped and counted, not thrown.
    expect(after).toBeGreaterThan(before);
    expect(curl('demo/client')).toBe('200');
  });

  it('survives a storm of connects reset at once through the inbound listener, and still serves', async () => {
    const before = await contained('inbound');
    const r = storm('legacy/legacy-client');
    expect(r.connected).toBeGreaterThan(0);
    // legacy-client is outside the mesh: its request to web takes the same inbound listener.
    expect(curl('legacy/legacy-client')).toBe('200');
    const after = await settle('inbound');
    await healthy();
    expect(after).toBeGreaterThan(before);
    expect(curl('demo/client')).toBe('200');
    expect(curl('legacy/legacy-client')).toBe('200');
  });
});
