// install-cni against real temp CNI conf and bin dirs: chaining nodemesh-cni after the primary
// conflist's plugins (every other field kept), idempotence, a clean uninstall, and errors that
// name the file; also the command, and the simulated node's install the embedded cluster runs.
import { chmodSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { chainPlugin, defaultPluginBinary, installCni, uninstallCni } from '../../src/agent/install-cni.js';
import { findPrimaryConfFile, type CniConfList } from '../../src/cni/index.js';
import { installCniCommand } from '../../src/cli/install-cni.js';
import { installChainedPlugin, uninstallChainedPlugin } from '../../src/cluster/cni.js';
import { readNetConf } from '../../src/sim/conflist.js';
import { simPaths } from '../../src/sim/paths.js';
import { REPO, tempDir } from '../helpers/sim.js';

const dirs: string[] = [];
function dir(prefix = 'nm-install-cni-'): string {
  const d = tempDir(prefix);
  dirs.push(d);
  return d;
}
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

/** A node as install-cni sees it: a conf dir holding `files`, an empty bin dir, and a plugin binary to copy. */
function node(files: Record<string, unknown>): { confDir: string; binDir: string; pluginBinary: string } {
  const root = dir();
  const confDir = join(root, 'net.d');
  const binDir = join(root, 'bin');
  mkdirSync(confDir);
  for (const [name, v] of Object.entries(files)) writeFileSync(join(confDir, name), typeof v === 'string' ? v : JSON.stringify(v, null, 2));
  const pluginBinary = join(root, 'nodemesh-cni.build');
  writeFileSync(pluginBinary, '#!/bin/sh\necho fake plugin\n');
  chmodSync(pluginBinary, 0o755);
  return { confDir, binDir, pluginBinary };
}

/** A primary CNI's conflist with fields of its own at every level. */
const CALICO: CniConfList = {
  name: 'k8s-pod-network',
  cniVersion: '0.3.1',
  disableCheck: true,
  plugins: [
    { type: 'calico', log_level: 'info', datastore_type: 'kubernetes', ipam: { type: 'calico-ipam' }, policy: { type: 'k8s' } },
    { type: 'portmap', snat: true, capabilities: { portMappings: true } },
    { type: 'bandwidth', capabilities: { bandwidth: true } },
  ],
};

const json = (file: string) => JSON.parse(readFileSync(file, 'utf8')) as CniConfList;

function codeOf(f: () => unknown): { code?: string; message: string } {
  try {
    f();
  } catch (e) {
    return e as { code?: string; message: string };
  }
  throw new Error('expected an error');
}

describe('install-cni', () => {
  it('chains nodemesh-cni after every existing plugin of the primary conflist, keeping every other field', () => {
    const n = node({ '10-calico.conflist': CALICO });
    const r = installCni({ ...n, plugin: { agentSocket: '/var/run/nodemesh/agent/cni.sock' } });
    expect(r).toEqual({ confFile: join(n.confDir, '10-calico.conflist'), binary: join(n.binDir, 'nodemesh-cni'), confChanged: true, binaryChanged: true });
    expect(json(r.confFile)).toEqual({ ...CALICO, plugins: [...CALICO.plugins, { type: 'nodemesh-cni', agentSocket: '/var/run/nodemesh/agent/cni.sock', capabilities: { 'io.kubernetes.cri.pod-annotations': true } }] });
    expect(readFileSync(r.binary, 'utf8')).toBe(readFileSync(n.pluginBinary, 'utf8'));
    expect(statSync(r.binary).mode & 0o777).toBe(0o755);
    // Atomic writes leave no temp file behind in either dir.
    expect(readdirSync(n.confDir)).toEqual(['10-calico.conflist']);
    expect(readdirSync(n.binDir)).toEqual(['nodemesh-cni']);
  });

  it('is idempotent: a second run changes no byte, and a new socket replaces our entry in place', () => {
    const n = node({ '10-calico.conflist': CALICO });
    const first = installCni({ ...n, plugin: { agentSocket: '/a.sock' } });
    const text = readFileSync(first.confFile, 'utf8');
    const again = installCni({ ...n, plugin: { agentSocket: '/a.sock' } });
    expect(again).toMatchObject({ confChanged: false, binaryChanged: false });
    expect(readFileSync(first.confFile, 'utf8')).toBe(text);
    installCni({ ...n, plugin: { agentSocket: '/b.sock' } });
    const plugins = json(first.confFile).plugins;
    expect(plugins.map((p) => p.type)).toEqual(['calico', 'portmap', 'bandwidth', 'nodemesh-cni']);
    expect(plugins.filter((p) => p.type === 'nodemesh-cni')).toEqual([{ type: 'nodemesh-cni', agentSocket: '/b.sock', capabilities: { 'io.kubernetes.cri.pod-annotations': true } }]);
  });

  it('moves an earlier entry of ours to the end, replacing it', () => {
    const once = chainPlugin(CALICO, { type: 'nodemesh-cni', agentSocket: '/a.sock' });
    const twice = chainPlugin(chainPlugin(once, { type: 'tuning' }), { type: 'nodemesh-cni', agentSocket: '/b.sock' });
    expect(twice.plugins.map((p) => p.type)).toEqual(['calico', 'portmap', 'bandwidth', 'tuning', 'nodemesh-cni']);
    expect(twice.plugins.at(-1)).toEqual({ type: 'nodemesh-cni', agentSocket: '/b.sock' });
  });

  it('uninstall restores the original plugins list and removes the binary; a second uninstall does nothing', () => {
    const n = node({ '10-calico.conflist': CALICO });
    installCni({ ...n, plugin: { agentSocket: '/a.sock' } });
    const r = uninstallCni(n);
    expect(r).toEqual({ unchained: [join(n.confDir, '10-calico.conflist')], removedBinary: join(n.binDir, 'nodemesh-cni') });
    expect(json(join(n.confDir, '10-calico.conflist'))).toEqual(CALICO);
    expect(readdirSync(n.binDir)).toEqual([]);
    expect(uninstallCni(n)).toEqual({ unchained: [] });
    expect(json(join(n.confDir, '10-calico.conflist'))).toEqual(CALICO);
  });

  it('uninstall with no conf or bin dir does nothing, and never removes the binary it copies from', () => {
    const root = dir();
    expect(uninstallCni({ confDir: join(root, 'none'), binDir: join(root, 'none') })).toEqual({ unchained: [] });
    const n = node({ '10-calico.conflist': CALICO });
    const src = join(n.binDir, 'nodemesh-cni');
    mkdirSync(n.binDir);
    writeFileSync(src, 'the build');
    installCni({ ...n, pluginBinary: src }); // the bin dir is where the build is
    expect(uninstallCni({ ...n, pluginBinary: src }).removedBinary).toBeUndefined();
    expect(readFileSync(src, 'utf8')).toBe('the build');
  });

  it('chains into the lexically first *.conflist, *.conf or *.json, as a runtime picks it', () => {
    const n = node({ '20-other.conflist': { ...CALICO, name: 'other' }, '10-first.conflist': CALICO, '00-notes.txt': 'not a config', '.05-hidden.conflist': '{' });
    expect(findPrimaryConfFile(n.confDir)).toBe(join(n.confDir, '10-first.conflist'));
    installCni(n);
    expect(json(join(n.confDir, '10-first.conflist')).plugins.at(-1)).toEqual({ type: 'nodemesh-cni', capabilities: { 'io.kubernetes.cri.pod-annotations': true } });
    expect(json(join(n.confDir, '20-other.conflist'))).toEqual({ ...CALICO, name: 'other' });
  });

  it('turns a single-plugin .conf primary into a .conflist of the same name, keeping its fields', () => {
    const n = node({ '10-bridge.conf': { cniVersion: '1.0.0', name: 'br', type: 'bridge', bridge: 'cni0', ipam: { type: 'host-local', subnet: '10.1.0.0/16' } } });
    const r = installCni({ ...n, plugin: { agentSocket: '/s' } });
    expect(r.confFile).toBe(join(n.confDir, '10-bridge.conflist'));
    expect(readdirSync(n.confDir)).toEqual(['10-bridge.conflist']);
    expect(json(r.confFile)).toEqual({
      cniVersion: '1.0.0',
      name: 'br',
      plugins: [{ type: 'bridge', bridge: 'cni0', ipam: { type: 'host-local', subnet: '10.1.0.0/16' } }, { type: 'nodemesh-cni', agentSocket: '/s', capabilities: { 'io.kubernetes.cri.pod-annotations': true } }],
    });
    uninstallCni(n);
    expect(json(r.confFile).plugins.map((p) => p.type)).toEqual(['bridge']);
  });

  it('refuses a conf dir with no config, naming the dir, and changes nothing', () => {
    const n = node({ 'README.txt': 'nothing here' });
    const e = codeOf(() => installCni(n));
    expect(e.code).toBe('NM_ERR_CNI');
    expect(e.message).toContain(n.confDir);
    expect(existsSync(n.binDir)).toBe(false);
    const gone = codeOf(() => installCni({ ...n, confDir: join(n.confDir, 'missing') }));
    expect(gone.code).toBe('NM_ERR_CNI');
    expect(gone.message).toContain(join(n.confDir, 'missing'));
  });

  it('refuses an invalid primary conflist, naming the file, and changes nothing', () => {
    const cases: [string, RegExp][] = [
      ['{"name": "x", "cniVersion": "1.0.0", "plugins": [', /not valid JSON/],
      ['[]', /must be a JSON object/],
      ['{"name": "x", "cniVersion": "1.0.0"}', /neither "plugins"/],
      ['{"cniVersion": "1.0.0", "plugins": [{"type": "bridge"}]}', /needs a "name"/],
      ['{"name": "x", "cniVersion": "1.0.0", "plugins": []}', /no plugins/],
      ['{"name": "x", "cniVersion": "1.0.0", "plugins": [{"type": "../evil"}]}', /plugins\[0\]/],
    ];
    for (const [text, why] of cases) {
      const n = node({ '10-broken.conflist': text });
      const file = join(n.confDir, '10-broken.conflist');
      const e = codeOf(() => installCni(n));
      expect(e.code).toBe('NM_ERR_CNI');
      expect(e.message).toContain(file);
      expect(e.message).toMatch(why);
      expect(readFileSync(file, 'utf8')).toBe(text);
      expect(existsSync(n.binDir)).toBe(false);
      // Uninstall cannot tell what the runtime would run either.
      expect(codeOf(() => uninstallCni(n)).message).toContain(file);
    }
  });

  it('refuses a missing plugin binary, naming it', () => {
    const n = node({ '10-calico.conflist': CALICO });
    const e = codeOf(() => installCni({ ...n, pluginBinary: join(n.binDir, 'nope') }));
    expect(e).toMatchObject({ code: 'NM_ERR_CNI' });
    expect(e.message).toContain(join(n.binDir, 'nope'));
    expect(json(join(n.confDir, '10-calico.conflist'))).toEqual(CALICO);
  });

  it('copies the package\'s own build by default', () => {
    expect(defaultPluginBinary()).toBe(join(REPO, 'native', 'build', 'nodemesh-cni'));
  });
});

describe('nodemesh install-cni', () => {
  it('installs and uninstalls with its flags, the socket defaulting to the state dir\'s', async () => {
    const n = node({ '10-calico.conflist': CALICO });
    const sd = dir('nm-install-cni-sd-');
    const flags = ['--cni-conf-dir', n.confDir, '--cni-bin-dir', n.binDir, '--plugin-binary', n.pluginBinary];
    expect(await installCniCommand.run([...flags, '--state-dir', sd])).toBe(0);
    expect(json(join(n.confDir, '10-calico.conflist')).plugins.at(-1)).toEqual({ type: 'nodemesh-cni', agentSocket: join(sd, 'agent', 'cni.sock'), capabilities: { 'io.kubernetes.cri.pod-annotations': true } });
    expect(existsSync(join(n.binDir, 'nodemesh-cni'))).toBe(true);
    expect(await installCniCommand.run([...flags, '--uninstall'])).toBe(0);
    expect(json(join(n.confDir, '10-calico.conflist'))).toEqual(CALICO);
    expect(existsSync(join(n.binDir, 'nodemesh-cni'))).toBe(false);
  });

  it('documents its flags and defaults', () => {
    for (const f of ['--cni-conf-dir', '--cni-bin-dir', '--agent-socket', '--uninstall', '/etc/cni/net.d', '/opt/cni/bin']) expect(installCniCommand.help).toContain(f);
  });
});

describe('install-cni on a simulated node (the embedded cluster\'s init container step)', () => {
  it('writes the simulator\'s conflist first when the node has none, and uninstall leaves it as generated', () => {
    const sd = dir('nm-sim-state-');
    const { netDir, binDir } = simPaths(sd);
    const before = () => readNetConf(netDir).list;
    installChainedPlugin(sd, { type: 'nodemesh-cni', agentSocket: '/run/x/cni.sock' });
    expect(readdirSync(netDir)).toEqual(['10-nodemesh-sim.conflist']);
    expect(before().plugins.map((p) => p.type)).toEqual(['bridge', 'nodemesh-cni']);
    expect(readdirSync(binDir)).toEqual(['nodemesh-cni']);
    uninstallChainedPlugin(sd);
    expect(before().plugins.map((p) => p.type)).toEqual(['bridge']);
    expect(readdirSync(binDir)).toEqual([]);
    expect(() => installChainedPlugin(sd, { type: 'bridge' })).toThrow(expect.objectContaining({ code: 'NM_ERR_CNI' }));
  });
});
