// The node's CNI config as the simulator's runtime sees it: the generated conflist, reading
// net.d like a runtime, where install-cni works on a simulated node, and the per-plugin config
// libcni builds. Chaining itself is install-cni's (test/unit/agent-install-cni.test.ts).
import { readdirSync, writeFileSync, mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { parseConfFile as parseConflist } from '../../src/cni/conflist.js';
import { conflistBridge, conflistSubnet, findNetConfFile, generateConflist, pluginInvocationConfig, readNetConf } from '../../src/sim/conflist.js';
import { newNodeRecord } from '../../src/sim/node.js';
import { allNodeCniDirs, nodeCniDirs } from '../../src/sim/node-cni.js';
import { nodePaths, simPaths } from '../../src/sim/paths.js';
import { STATE_VERSION, writeSimState } from '../../src/sim/state.js';
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

describe("a simulated node's CNI dirs for install-cni", () => {
  it('are the host node\'s in host mode, with the simulator\'s conflist written first when the dir has none', () => {
    const sd = stateDir();
    const { netDir, binDir, ipamDir } = simPaths(sd);
    expect(nodeCniDirs(sd, 'any-name')).toEqual({ confDir: netDir, binDir });
    expect(readdirSync(netDir)).toEqual(['10-nodemesh-sim.conflist']); // no temp file left
    expect(readNetConf(netDir).list).toEqual(generateConflist({ ipamDir }));
  });

  it("leave a config dir that has a config alone, even when it is not the simulator's own", () => {
    const sd = stateDir();
    const { netDir } = simPaths(sd);
    mkdirSync(netDir, { recursive: true });
    writeFileSync(join(netDir, '05-operator.conflist'), JSON.stringify({ cniVersion: '1.0.0', name: 'op', plugins: [{ type: 'ptp' }] }));
    nodeCniDirs(sd);
    expect(readdirSync(netDir)).toEqual(['05-operator.conflist']);
  });

  it('are the named node\'s in multi-node mode, and an unknown or missing node is NM_ERR_SIM_NODE', () => {
    const sd = stateDir();
    const paths = simPaths(sd);
    const node = newNodeRecord(paths, 'node-a', 0, undefined, '/sys/fs/cgroup');
    writeSimState(paths, { version: STATE_VERSION, createdAt: '', updatedAt: '', ipForwardBefore: '0', cgroupRoot: '/sys/fs/cgroup', cgroupParent: '/sys/fs/cgroup/nodemesh-sim', mode: 'nodes', nodes: [node], pods: [] });
    const np = nodePaths(paths, 'node-a');
    expect(nodeCniDirs(sd, 'node-a')).toEqual({ confDir: np.netDir, binDir: np.binDir });
    expect(readNetConf(np.netDir).list.plugins[0]).toMatchObject({ type: 'bridge', isGateway: true });
    // The node's own plugin dir comes right after Debian's plugins on its CNI_PATH.
    expect(node.cniPath.slice(0, 2)).toEqual(['/usr/lib/cni', np.binDir]);
    expect(() => nodeCniDirs(sd, 'node-z')).toThrow(expect.objectContaining({ code: 'NM_ERR_SIM_NODE' }));
    expect(() => nodeCniDirs(sd)).toThrow(expect.objectContaining({ code: 'NM_ERR_SIM_NODE' }));
    expect(allNodeCniDirs(sd)).toEqual([{ confDir: paths.netDir, binDir: paths.binDir }, { confDir: np.netDir, binDir: np.binDir }]);
  });
});

describe('per-plugin invocation config (libcni semantics)', () => {
  // The simulator's conflist with nodemesh-cni chained last, as install-cni leaves it.
  const base = generateConflist({ ipamDir: '/i' });
  const list = { ...base, plugins: [...base.plugins, { type: 'nodemesh-cni', agentSocket: '/a', capabilities: { cgroupPath: true } }] };

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
