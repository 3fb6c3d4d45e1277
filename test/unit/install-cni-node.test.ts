// install-cni on a real node's layout, in temp dirs: chaining into a containerd-style bridge
// conflist (portmap, bandwidth kept) by splicing our entry into the file's text, so that a rerun
// changes no byte and an uninstall gives the primary CNI's file back byte for byte; a .conf
// converted; bad JSON reported and left untouched. Then the real `nodemesh install-cni --watch`
// process (bin/nodemesh, so `make ts` first): the primary CNI rewriting its file is re-chained,
// a half-written file is never overwritten, and SIGTERM keeps or uninstalls as configured.
import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { appendPluginText, pluginSpans, removePluginText } from '../../src/agent/conflist-edit.js';
import { installCni, uninstallCni } from '../../src/agent/install-cni.js';
import { CLI, tempDir } from '../helpers/sim.js';

const dirs: string[] = [];
const procs: ChildProcess[] = [];
afterEach(async () => {
  for (const p of procs.splice(0)) {
    if (p.exitCode === null && p.signalCode === null) {
      p.kill('SIGKILL');
      await new Promise((r) => p.once('exit', r));
    }
  }
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

/** containerd's example conflist (its docs' 10-containerd-net.conflist) plus bandwidth, as written by hand: 2-space indent. */
const CONTAINERD = `{
  "cniVersion": "1.0.0",
  "name": "containerd-net",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "cni0",
      "isGateway": true,
      "ipMasq": true,
      "promiscMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [
          [{
            "subnet": "10.88.0.0/16"
          }]
        ],
        "routes": [
          { "dst": "0.0.0.0/0" }
        ]
      }
    },
    {
      "type": "portmap",
      "capabilities": {"portMappings": true}
    },
    {
      "type": "bandwidth",
      "capabilities": {"bandwidth": true}
    }
  ]
}
`;

/** The same network as another primary CNI writes it: tabs, keys in its own order, one line per plugin. */
const TABBED = `{\n\t"name": "k8s-pod-network",\n\t"cniVersion": "0.3.1",\n\t"plugins": [\n\t\t{"type": "bridge", "bridge": "cni0", "ipam": {"type": "host-local", "subnet": "10.22.0.0/16"}},\n\t\t{"type": "portmap", "snat": true, "capabilities": {"portMappings": true}}\n\t]\n}\n`;

const ENTRY = { type: 'nodemesh-cni', agentSocket: '/var/run/nodemesh/agent/cni.sock', capabilities: { 'io.kubernetes.cri.pod-annotations': true } };

function node(files: Record<string, string>): { confDir: string; binDir: string; pluginBinary: string } {
  const root = tempDir('nm-cni-node-');
  dirs.push(root);
  const confDir = join(root, 'net.d');
  const binDir = join(root, 'bin');
  mkdirSync(confDir);
  for (const [name, text] of Object.entries(files)) writeFileSync(join(confDir, name), text);
  const pluginBinary = join(root, 'nodemesh-cni.build');
  writeFileSync(pluginBinary, '#!/bin/sh\necho fake plugin\n');
  chmodSync(pluginBinary, 0o755);
  return { confDir, binDir, pluginBinary };
}

const types = (file: string) => (JSON.parse(readFileSync(file, 'utf8')) as { plugins: { type: string }[] }).plugins.map((p) => p.type);

describe('install-cni on a node: the conflist text', () => {
  it('uses only plugins Debian ships in /usr/lib/cni, so the fixtures are ones a runtime could run', () => {
    for (const t of [...types2(CONTAINERD), ...types2(TABBED)]) expect(existsSync(join('/usr/lib/cni', t)), t).toBe(true);
  });

  it('appends our entry after portmap and bandwidth, indented like them, every other byte unchanged', () => {
    const n = node({ '10-containerd-net.conflist': CONTAINERD });
    const file = join(n.confDir, '10-containerd-net.conflist');
    const r = installCni({ ...n, plugin: { agentSocket: ENTRY.agentSocket } });
    expect(r).toMatchObject({ confFile: file, confChanged: true, binaryChanged: true });
    const text = readFileSync(file, 'utf8');
    expect(types(file)).toEqual(['bridge', 'portmap', 'bandwidth', 'nodemesh-cni']);
    expect(JSON.parse(text).plugins[3]).toEqual(ENTRY);
    // Only an insertion after the bandwidth entry: the text before and after it is the primary's.
    const at = CONTAINERD.indexOf('"bandwidth": true}\n    }') + '"bandwidth": true}\n    }'.length;
    expect(text.slice(0, at)).toBe(CONTAINERD.slice(0, at));
    expect(text.slice(-'\n  ]\n}\n'.length)).toBe('\n  ]\n}\n');
    expect(text).toContain(',\n    {\n      "type": "nodemesh-cni",\n      "agentSocket": "/var/run/nodemesh/agent/cni.sock",\n      "capabilities": {\n        "io.kubernetes.cri.pod-annotations": true\n      }\n    }\n  ]');
    expect(readdirSync(n.confDir)).toEqual(['10-containerd-net.conflist']);
  });

  it('changes no byte on a rerun, and replaces only our entry when its socket changes', () => {
    const n = node({ '10-containerd-net.conflist': CONTAINERD });
    const file = join(n.confDir, '10-containerd-net.conflist');
    installCni({ ...n, plugin: { agentSocket: '/a.sock' } });
    const once = readFileSync(file, 'utf8');
    expect(installCni({ ...n, plugin: { agentSocket: '/a.sock' } })).toMatchObject({ confChanged: false, binaryChanged: false });
    expect(readFileSync(file, 'utf8')).toBe(once);
    expect(installCni({ ...n, plugin: { agentSocket: '/b.sock' } }).confChanged).toBe(true);
    expect(readFileSync(file, 'utf8')).toBe(once.replace('/a.sock', '/b.sock'));
  });

  it('uninstall gives the primary CNI its file back byte for byte, in its own formatting', () => {
    for (const [name, text] of [['10-containerd-net.conflist', CONTAINERD], ['10-calico.conflist', TABBED]] as const) {
      const n = node({ [name]: text });
      const file = join(n.confDir, name);
      installCni({ ...n, plugin: { agentSocket: '/s' } });
      expect(readFileSync(file, 'utf8')).not.toBe(text);
      expect(types(file).at(-1)).toBe('nodemesh-cni');
      expect(uninstallCni(n)).toEqual({ unchained: [file], removedBinary: join(n.binDir, 'nodemesh-cni') });
      expect(readFileSync(file, 'utf8')).toBe(text);
    }
  });

  it('formats an entry in a one-line plugins array inline, and cuts it back out exactly', () => {
    const one = '{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"bridge"},{"type":"portmap"}]}';
    const with_ = appendPluginText(one, ENTRY)!;
    expect(with_).toBe('{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"bridge"},{"type":"portmap"},{"type":"nodemesh-cni","agentSocket":"/var/run/nodemesh/agent/cni.sock","capabilities":{"io.kubernetes.cri.pod-annotations":true}}]}');
    expect(removePluginText(with_, 'nodemesh-cni')).toBe(one);
    // Our entry first or alone is cut too, and strings holding brackets do not confuse the scan.
    const tricky = '{"name":"x]}","plugins":[{"type":"nodemesh-cni"}, {"type":"bridge","note":"[{,}]"}],"cniVersion":"1.0.0"}';
    expect(pluginSpans(tricky)!.items).toHaveLength(2);
    expect(removePluginText(tricky, 'nodemesh-cni')).toBe('{"name":"x]}","plugins":[{"type":"bridge","note":"[{,}]"}],"cniVersion":"1.0.0"}');
    expect(removePluginText('{"plugins":[{"type":"nodemesh-cni"}]}', 'nodemesh-cni')).toBe('{"plugins":[]}');
  });

  it('turns a single-plugin .conf into a .conflist; when the primary writes its .conf again, converts it again', () => {
    const conf = '{\n  "cniVersion": "0.4.0",\n  "name": "mynet",\n  "type": "bridge",\n  "bridge": "cni0",\n  "ipam": {"type": "host-local", "subnet": "10.22.0.0/16"}\n}\n';
    const n = node({ '10-mynet.conf': conf });
    const r = installCni({ ...n, plugin: { agentSocket: '/s' } });
    expect(r.confFile).toBe(join(n.confDir, '10-mynet.conflist'));
    expect(readdirSync(n.confDir)).toEqual(['10-mynet.conflist']);
    expect(types(r.confFile)).toEqual(['bridge', 'nodemesh-cni']);
    // The primary CNI restarts and writes its .conf again: it is first by name, so it is the config.
    writeFileSync(join(n.confDir, '10-mynet.conf'), conf.replace('10.22.0.0/16', '10.23.0.0/16'));
    installCni({ ...n, plugin: { agentSocket: '/s' } });
    expect(readdirSync(n.confDir)).toEqual(['10-mynet.conflist']);
    expect(readFileSync(r.confFile, 'utf8')).toContain('10.23.0.0/16');
    expect(types(r.confFile)).toEqual(['bridge', 'nodemesh-cni']);
    // A conflist of the same name that is not our conversion is never replaced.
    const m = node({ '10-mynet.conf': conf, '10-mynet.conflist': TABBED });
    expect(() => installCni(m)).toThrow(expect.objectContaining({ code: 'NM_ERR_CNI' }));
    expect(readFileSync(join(m.confDir, '10-mynet.conflist'), 'utf8')).toBe(TABBED);
  });

  it('reports bad JSON naming the file and leaves it untouched; the same dir with valid JSON chains', () => {
    const broken = CONTAINERD.slice(0, 200);
    const n = node({ '10-containerd-net.conflist': broken });
    const file = join(n.confDir, '10-containerd-net.conflist');
    expect(() => installCni(n)).toThrow(expect.objectContaining({ code: 'NM_ERR_CNI', message: expect.stringContaining(file) }));
    expect(() => installCni(n)).toThrow(/not valid JSON/);
    expect(readFileSync(file, 'utf8')).toBe(broken);
    expect(existsSync(n.binDir)).toBe(false);
    writeFileSync(file, CONTAINERD);
    expect(installCni(n).confChanged).toBe(true);
    expect(types(file).at(-1)).toBe('nodemesh-cni');
  });
});

function types2(text: string): string[] {
  return (JSON.parse(text) as { plugins: { type: string }[] }).plugins.map((p) => p.type);
}

/** Polls `f` every 25 ms until it holds, for at most `ms` (a bound, not a timing assertion). */
async function eventually(f: () => boolean, ms = 10_000): Promise<boolean> {
  for (let waited = 0; waited < ms; waited += 25) {
    if (f()) return true;
    await new Promise((r) => setTimeout(r, 25));
  }
  return f();
}

function startWatch(n: { confDir: string; binDir: string; pluginBinary: string }, extra: string[] = []): { p: ChildProcess; stderr: () => string } {
  const p = spawn(CLI, ['install-cni', '--watch', '--cni-conf-dir', n.confDir, '--cni-bin-dir', n.binDir, '--plugin-binary', n.pluginBinary, '--agent-socket', '/run/x/cni.sock', '--check-interval', '1', ...extra], {
    env: { ...process.env, NODEMESH_LOG_LEVEL: 'info' },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  procs.push(p);
  let err = '';
  p.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  return { p, stderr: () => err };
}

const exited = (p: ChildProcess) => new Promise<number | null>((r) => (p.exitCode !== null ? r(p.exitCode) : p.once('exit', (c) => r(c))));

describe('nodemesh install-cni --watch (a real process)', () => {
  it('re-chains when the primary CNI rewrites its conflist, never overwrites a file it cannot parse, and keeps the chain on SIGTERM', async () => {
    const n = node({ '10-containerd-net.conflist': CONTAINERD });
    const file = join(n.confDir, '10-containerd-net.conflist');
    const w = startWatch(n);
    expect(await eventually(() => existsSync(file) && types(file).at(-1) === 'nodemesh-cni')).toBe(true);
    expect(await eventually(() => w.stderr().includes('watching'))).toBe(true);

    // The primary CNI restarts and writes its own file again, atomically (Calico, Cilium).
    const rewritten = CONTAINERD.replace('10.88.0.0/16', '10.99.0.0/16');
    writeFileSync(join(n.confDir, '.tmp'), rewritten);
    renameSync(join(n.confDir, '.tmp'), file);
    expect(await eventually(() => types(file).at(-1) === 'nodemesh-cni')).toBe(true);
    expect(readFileSync(file, 'utf8')).toContain('10.99.0.0/16');
    expect(types(file)).toEqual(['bridge', 'portmap', 'bandwidth', 'nodemesh-cni']);

    // A primary caught halfway through an in-place write: reported, left exactly as it is.
    const half = rewritten.slice(0, 150);
    writeFileSync(file, half);
    expect(await eventually(() => /not valid JSON/.test(w.stderr()) && w.stderr().includes(file))).toBe(true);
    expect(readFileSync(file, 'utf8')).toBe(half);
    // …and chained as soon as it is whole again, in place (the plain write fires inotify too).
    writeFileSync(file, rewritten);
    expect(await eventually(() => { try { return types(file).at(-1) === 'nodemesh-cni'; } catch { return false; } })).toBe(true);

    // The binary removed from the host's bin dir comes back at the periodic check.
    rmSync(join(n.binDir, 'nodemesh-cni'));
    expect(await eventually(() => existsSync(join(n.binDir, 'nodemesh-cni')))).toBe(true);

    w.p.kill('SIGTERM');
    expect(await exited(w.p)).toBe(0);
    expect(types(file).at(-1)).toBe('nodemesh-cni');
    expect(existsSync(join(n.binDir, 'nodemesh-cni'))).toBe(true);
  }, 60_000);

  it('with --on-exit uninstall, SIGTERM gives the primary its file back byte for byte and removes the binary', async () => {
    const n = node({ '10-calico.conflist': TABBED });
    const file = join(n.confDir, '10-calico.conflist');
    const w = startWatch(n, ['--on-exit', 'uninstall']);
    expect(await eventually(() => w.stderr().includes('watching'))).toBe(true);
    expect(types(file).at(-1)).toBe('nodemesh-cni');
    w.p.kill('SIGTERM');
    expect(await exited(w.p)).toBe(0);
    expect(readFileSync(file, 'utf8')).toBe(TABBED);
    expect(readdirSync(n.binDir)).toEqual([]);
  }, 30_000);

  it('refuses to start on a conf dir whose primary config is bad JSON, naming it, and leaves it alone', async () => {
    const n = node({ '10-calico.conflist': '{"plugins": [' });
    const w = startWatch(n);
    expect(await exited(w.p)).not.toBe(0);
    expect(w.stderr()).toContain(join(n.confDir, '10-calico.conflist'));
    expect(readFileSync(join(n.confDir, '10-calico.conflist'), 'utf8')).toBe('{"plugins": [');
  }, 30_000);
});
