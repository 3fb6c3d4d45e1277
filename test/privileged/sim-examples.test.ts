// examples/demo runs in the simulator as shipped: nginx (with its own nginx.conf), redis and
// python http.server answer the client pod, and the host is clean afterwards.
import { existsSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { describePrivileged } from '../helpers/privileged.js';
import { hostSnapshot, REPO, tempDir, type HostSnapshot } from '../helpers/sim.js';
import { listPods, simDown, simUp } from '../../src/sim/index.js';
import { findCgroup2Root } from '../../src/sim/cgroup.js';
import { spawnInPod } from '../../src/sim/query.js';

let stateDir: string;
let cgroupRoot: string;
let before: HostSnapshot;
let nginxTempDirs: string[] = [];

function output(pod: string, argv: string[]): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve) => {
    const child = spawnInPod(pod, argv, { stateDir, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout!.on('data', (b: Buffer) => (out += b.toString()));
    child.stderr!.on('data', (b: Buffer) => (out += b.toString()));
    child.on('close', (code) => resolve({ code, out }));
  });
}

describePrivileged('examples/demo in the node simulator', () => {
  beforeAll(() => {
    cgroupRoot = findCgroup2Root();
    before = hostSnapshot(cgroupRoot);
    if (before.netns.length || before.links.length || before.cgroups.length) {
      throw new Error(`another simulator is running on this host (${JSON.stringify(before)}); stop it first (nodemesh sim down)`);
    }
    stateDir = tempDir('nm-sim-examples-');
    nginxTempDirs = ['body', 'proxy', 'fastcgi', 'uwsgi', 'scgi'].map((k) => `/tmp/nodemesh-demo-web-${k}`).filter((d) => !existsSync(d));
  });

  afterAll(async () => {
    if (stateDir) {
      await simDown({ stateDir }).catch(() => undefined);
      rmSync(stateDir, { recursive: true, force: true });
    }
    // The empty temp dirs nginx made (see examples/demo/nginx.conf), unless they predate us.
    for (const d of nginxTempDirs) rmSync(d, { recursive: true, force: true });
  });

  it('brings up every Pod of the example and nothing else', async () => {
    const r = await simUp(join(REPO, 'examples', 'demo'), { stateDir });
    expect(r.created.map((p) => `${p.namespace}/${p.name}`).sort()).toEqual(['demo/client', 'demo/redis', 'demo/web', 'legacy/legacy-client', 'legacy/legacy-web']);
  });

  it('serves nginx, redis and python http.server to the client pod', async () => {
    const ip = new Map(listPods({ stateDir }).map((p) => [`${p.namespace}/${p.name}`, p.ip]));
    const web = await output('demo/client', ['curl', '-sS', '--max-time', '10', `http://${ip.get('demo/web')}:8080/`]);
    expect(web).toEqual({ code: 0, out: 'hello from demo/web (nginx)\n' });
    const redis = await output('demo/client', ['redis-cli', '-h', ip.get('demo/redis')!, 'ping']);
    expect(redis).toEqual({ code: 0, out: 'PONG\n' });
    const legacy = await output('demo/client', ['curl', '-sS', '-o', '/dev/null', '-w', '%{http_code}', `http://${ip.get('legacy/legacy-web')}:8000/`]);
    expect(legacy).toEqual({ code: 0, out: '200' });
  });

  it('comes down without a trace', async () => {
    await simDown({ stateDir });
    expect(hostSnapshot(cgroupRoot)).toEqual(before);
    // nginx's pid file went with it; its temp dirs in /tmp are the example's own, by design.
    expect(existsSync('/tmp/nodemesh-demo-web.pid')).toBe(false);
  });
});
