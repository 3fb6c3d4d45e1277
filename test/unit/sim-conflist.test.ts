// The node's CNI config: the generated conflist, reading net.d like a runtime, chaining a
// plugin as install-cni does, and the per-plugin config libcni builds.
import { existsSync, readdirSync, readFileSync, writeFileSync, mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import {
  chainPlugin,
  conflistBridge,
  conflistSubnet,
  findNetConfFile,
  generateConflist,
  installChainedPlugin,
  parseConflist,
  pluginInvocationConfig,
  readNetConf,
  uninstallChainedPlugin,
} from '../../src/sim/conflist.js';
import { simPaths } from '../../src/sim/paths.js';
import { tempDir } from '../helpers/sim.js';

const dirs: string[] = [];
function stateDir(): string {
  const d = tempDir('nm-sim-state-');
  dirs.push(d);
  return d;
}
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

describe('generated conflist', () => {
  it('is bridge + host-local with no gateway, no masquerade, the ips capability and a private dataDir', () => {
    const list = generateConflist({ ipamDir: '/s/sim/ipam', subnet: '10.250.0.0/24' });
    expect(list).toEqual({
      cniVersion: '1.0.0',
      name: 'nodemesh-sim',
      plugins: [
        {
          type: 'bridge',
          bridge: 'nm-br0',
          isGateway: false,
          ipMasq: false,
          capabilities: { ips: true },
          ipam: { type: 'host-local', dataDir: '/s/sim/ipam', ranges: [[{ subnet: '10.250.0.0/24' }]] },
        },
      ],
    });
    expect(conflistSubnet(list)).toBe('10.250.0.0/24');
    expect(conflistBridge(list)).toBe('nm-br0');
  });
});

describe('reading the config dir like a runtime', () => {
  it('takes the first .conflist/.conf/.json by name and ignores other files', () => {
    const d = tempDir('nm-netd-');
    dirs.push(d);
    writeFileSync(join(d, '99-late.conflist'), '{}');
    writeFileSync(join(d, '05-first.conf'), JSON.stringify({ cniVersion: '1.0.0', name: 'single', type: 'bridge' }));
    writeFileSync(join(d, '00-readme.txt'), 'not a config');
    expect(findNetConfFile(d)).toBe(join(d, '05-first.conf'));
    // A single-plugin .conf is wrapped into a list, as libcni does.
    expect(readNetConf(d).list).toEqual({ cniVersion: '1.0.0', name: 'single', plugins: [{ type: 'bridge' }] });
  });

  it('rejects configs a runtime could not use, naming the file', () => {
    expect(() => parseConflist('{nope', '/x.conflist')).toThrow(/x\.conflist.*not valid JSON/);
    expect(() => parseConflist('{"name":"n","cniVersion":"1.0.0","plugins":[]}', '/x')).toThrow(/no plugins/);
    expect(() => parseConflist('{"name":"n","cniVersion":"1.0.0","plugins":[{"type":"../evil"}]}', '/x')).toThrow(/plugins\[0\]/);
    try {
      parseConflist('{"cniVersion":"1.0.0","plugins":[{"type":"bridge"}]}', '/x');
      expect.unreachable();
    } catch (e) {
      expect((e as { code: string }).code).toBe('NM_ERR_CNI');
    }
  });
});

describe('install-cni: chaining a plugin', () => {
  it('appends the plugin as the last one and replaces an earlier entry of its type', () => {
    const base = generateConflist({ ipamDir: '/i' });
    const once = chainPlugin(base, { type: 'nodemesh-cni', agentSocket: '/a.sock' });
    const twice = chainPlugin(chainPlugin(once, { type: 'portmap' }), { type: 'nodemesh-cni', agentSocket: '/b.sock' });
    expect(twice.plugins.map((p) => p.type)).toEqual(['bridge', 'portmap', 'nodemesh-cni']);
    expect(twice.plugins[2]).toEqual({ type: 'nodemesh-cni', agentSocket: '/b.sock' });
  });

  it('writes the conflist first when the node has none, atomically, and uninstall removes only that plugin', () => {
    const sd = stateDir();
    const { netDir, ipamDir } = simPaths(sd);
    installChainedPlugin(sd, { type: 'nodemesh-cni', agentSocket: '/run/x/cni.sock' });
    expect(readdirSync(netDir)).toEqual(['10-nodemesh-sim.conflist']); // no temp file left
    const file = join(netDir, '10-nodemesh-sim.conflist');
    const list = JSON.parse(readFileSync(file, 'utf8')) as ReturnType<typeof generateConflist>;
    expect(list.plugins.map((p) => p.type)).toEqual(['bridge', 'nodemesh-cni']);
    expect((list.plugins[0]!.ipam as { dataDir: string }).dataDir).toBe(ipamDir);

    installChainedPlugin(sd, { type: 'nodemesh-cni', agentSocket: '/run/y/cni.sock' });
    expect(readNetConf(netDir).list.plugins.filter((p) => p.type === 'nodemesh-cni')).toEqual([{ type: 'nodemesh-cni', agentSocket: '/run/y/cni.sock' }]);

    uninstallChainedPlugin(sd);
    expect(readNetConf(netDir).list).toEqual(generateConflist({ ipamDir }));
    uninstallChainedPlugin(sd); // idempotent
    expect(readdirSync(netDir)).toEqual(['10-nodemesh-sim.conflist']);
  });

  it('chains into the file a runtime would read, even when it is not the simulator\'s own', () => {
    const sd = stateDir();
    const { netDir } = simPaths(sd);
    mkdirSync(netDir, { recursive: true });
    writeFileSync(join(netDir, '05-operator.conflist'), JSON.stringify({ cniVersion: '1.0.0', name: 'op', plugins: [{ type: 'ptp' }] }));
    installChainedPlugin(sd, { type: 'nodemesh-cni' });
    expect(existsSync(join(netDir, '10-nodemesh-sim.conflist'))).toBe(false);
    expect(readNetConf(netDir).list.plugins.map((p) => p.type)).toEqual(['ptp', 'nodemesh-cni']);
  });

  it('uninstall without a config dir does nothing', () => {
    expect(() => uninstallChainedPlugin(stateDir())).not.toThrow();
  });
});

describe('per-plugin invocation config (libcni semantics)', () => {
  const list = chainPlugin(generateConflist({ ipamDir: '/i' }), { type: 'nodemesh-cni', agentSocket: '/a', capabilities: { cgroupPath: true } });

  it('injects name and cniVersion into every plugin, and no prevResult for the first ADD', () => {
    const c = pluginInvocationConfig(list, 0, undefined, {});
    expect(c).toMatchObject({ name: 'nodemesh-sim', cniVersion: '1.0.0', type: 'bridge' });
    expect(c).not.toHaveProperty('prevResult');
    expect(c).not.toHaveProperty('runtimeConfig');
  });

  it('passes prevResult on and gives each plugin only the capability args it declares', () => {
    const prev = { cniVersion: '1.0.0', ips: [{ address: '10.244.0.9/24' }] };
    const caps = { ips: ['10.244.0.9/24'], cgroupPath: '/nodemesh-sim/kubepods/besteffort/podu', portMappings: [] };
    const bridge = pluginInvocationConfig(list, 0, undefined, caps);
    expect(bridge.runtimeConfig).toEqual({ ips: ['10.244.0.9/24'] });
    const ours = pluginInvocationConfig(list, 1, prev, caps);
    expect(ours).toMatchObject({ type: 'nodemesh-cni', agentSocket: '/a', name: 'nodemesh-sim', cniVersion: '1.0.0', prevResult: prev });
    expect(ours.runtimeConfig).toEqual({ cgroupPath: '/nodemesh-sim/kubepods/besteffort/podu' });
  });
});
