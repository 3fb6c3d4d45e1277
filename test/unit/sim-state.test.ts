// The simulator's state file and lock, and the subnet arithmetic behind pinned pod IPs.
import { spawn } from 'node:child_process';
import { existsSync, readdirSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { lockSim, readSimState, removeSimState, STATE_VERSION, writeSimState, type SimState } from '../../src/sim/state.js';
import { resolveStateDir, simPaths } from '../../src/sim/paths.js';
import { parseSubnet, unassignableReason } from '../../src/sim/subnet.js';
import { tempDir } from '../helpers/sim.js';

const dirs: string[] = [];
function paths() {
  const d = tempDir('nm-sim-state-');
  dirs.push(d);
  return simPaths(d);
}
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function sampleState(): SimState {
  return {
    version: STATE_VERSION,
    createdAt: '2026-01-01T00:00:00.000Z',
    updatedAt: '',
    ipForwardBefore: '0',
    cgroupRoot: '/sys/fs/cgroup',
    cgroupParent: '/sys/fs/cgroup/nodemesh-sim',
    nodes: [{ name: 'n1', bridge: 'nm-br0', subnet: '10.244.0.0/24', netDir: '/s/sim/net.d', ipamDir: '/s/sim/ipam', cniPath: ['/usr/lib/cni'] }],
    pods: [],
  };
}

function codeOf(f: () => unknown): string | undefined {
  try {
    f();
  } catch (e) {
    return (e as { code?: string }).code;
  }
  return undefined;
}

describe('state file', () => {
  it('lays out everything under <stateDir>/sim', () => {
    const p = simPaths('/x');
    expect(p).toMatchObject({ simDir: '/x/sim', stateFile: '/x/sim/state.json', netDir: '/x/sim/net.d', ipamDir: '/x/sim/ipam', podsDir: '/x/sim/pods' });
  });

  it('defaults the state dir to $NODEMESH_STATE_DIR, then /run/nodemesh', () => {
    const saved = process.env.NODEMESH_STATE_DIR;
    try {
      delete process.env.NODEMESH_STATE_DIR;
      expect(resolveStateDir()).toBe('/run/nodemesh');
      process.env.NODEMESH_STATE_DIR = '/tmp/elsewhere';
      expect(resolveStateDir()).toBe('/tmp/elsewhere');
      expect(resolveStateDir('/opt/s')).toBe('/opt/s');
    } finally {
      if (saved === undefined) delete process.env.NODEMESH_STATE_DIR;
      else process.env.NODEMESH_STATE_DIR = saved;
    }
  });

  it('is absent before the first write, round-trips, and leaves no temp file', () => {
    const p = paths();
    expect(readSimState(p)).toBeUndefined();
    const s = sampleState();
    writeSimState(p, s);
    expect(readdirSync(p.simDir)).toEqual(['state.json']);
    const back = readSimState(p)!;
    expect(back.nodes).toEqual(s.nodes);
    expect(back.updatedAt).not.toBe('');
    removeSimState(p);
    removeSimState(p); // idempotent
    expect(existsSync(p.stateFile)).toBe(false);
  });

  it('calls corrupt or foreign state an error instead of treating it as empty', () => {
    const p = paths();
    mkdirSync(p.simDir, { recursive: true });
    writeFileSync(p.stateFile, '{"version": 1, "pods": [');
    expect(codeOf(() => readSimState(p))).toBe('NM_ERR_SIM_STATE');
    writeFileSync(p.stateFile, '{"version": 99, "pods": [], "nodes": []}');
    expect(codeOf(() => readSimState(p))).toBe('NM_ERR_SIM_STATE');
  });
});

describe('lock', () => {
  it('lets one holder in at a time and is free again after release', async () => {
    const p = paths();
    const release = await lockSim(p);
    await expect(lockSim(p, 200)).rejects.toMatchObject({ code: 'NM_ERR_SIM_STATE' });
    release();
    const again = await lockSim(p, 200);
    again();
    expect(existsSync(p.lockFile)).toBe(false);
  });

  it('takes over a lock whose holder died', async () => {
    const p = paths();
    // A pid that certainly is not running: a child that has exited and been reaped.
    const dead = await new Promise<number>((resolve) => {
      const c = spawn('true');
      c.on('close', () => resolve(c.pid!));
    });
    mkdirSync(p.simDir, { recursive: true });
    writeFileSync(p.lockFile, `${dead}\n`);
    const release = await lockSim(p, 200);
    release();
  });
});

describe('pod subnet', () => {
  it('accepts IPv4 CIDRs that leave room for pods and rejects the rest', () => {
    expect(parseSubnet('10.244.0.0/24')).toMatchObject({ prefix: 24 });
    for (const bad of ['10.244.0.0', '10.244.0.1/24', '10.244.0.0/31', 'fd00::/64', '300.0.0.0/8']) {
      expect(codeOf(() => parseSubnet(bad))).toBe('NM_ERR_USAGE');
    }
  });

  it('says why host-local would not hand out an address', () => {
    const s = parseSubnet('10.244.0.0/24');
    expect(unassignableReason(s, '10.244.0.50')).toBeUndefined();
    expect(unassignableReason(s, '10.244.1.5')).toMatch(/outside/);
    expect(unassignableReason(s, '10.244.0.0')).toMatch(/network/);
    expect(unassignableReason(s, '10.244.0.1')).toMatch(/gateway/);
    expect(unassignableReason(s, '10.244.0.255')).toMatch(/broadcast/);
  });
});
