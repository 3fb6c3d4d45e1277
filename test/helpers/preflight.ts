// The privileged project's global setup: checks, once, that this machine can run it (root,
// bpffs, cgroup v2, kernel BTF, the tools the suites spawn, the mesh's ports free in the root netns, no
// namespace left by an earlier run) and says exactly what is wrong when it cannot, instead
// of letting the first suites fail on it one by one.
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { PORTS } from '../../src/net/index.js';

const TOOLS = ['ip', 'nsenter', 'curl', 'tcpdump', 'python3', 'ss'];
const CNI_PLUGINS = ['/usr/lib/cni/bridge', '/usr/lib/cni/host-local', '/usr/lib/cni/loopback'];

/** `ss` lines of TCP listeners on the mesh's well-known ports, in the root netns. */
function heldPorts(): string[] {
  const ports = new Set<number>(Object.values(PORTS));
  const out = spawnSync('ss', ['-Hltnp'], { encoding: 'utf8' }).stdout ?? '';
  return out.split('\n').filter((l) => {
    const local = l.trim().split(/\s+/)[3] ?? '';
    return ports.has(Number(local.slice(local.lastIndexOf(':') + 1)));
  });
}

export default async function preflight(): Promise<void> {
  if (typeof process.getuid !== 'function' || process.getuid() !== 0) return; // the suites skip themselves, one line each
  const problems: string[] = [];
  const mounts = readFileSync('/proc/mounts', 'utf8');
  if (!/^\S+ \/sys\/fs\/bpf bpf /m.test(mounts)) problems.push('bpffs is not mounted at /sys/fs/bpf (mount -t bpf bpf /sys/fs/bpf)');
  if (!existsSync('/sys/fs/cgroup/unified/cgroup.controllers') && !existsSync('/sys/fs/cgroup/cgroup.controllers')) problems.push('no cgroup v2 hierarchy at /sys/fs/cgroup/unified or /sys/fs/cgroup');
  if (!existsSync('/sys/kernel/btf/vmlinux')) problems.push('no kernel BTF at /sys/kernel/btf/vmlinux (the redirect programs read tcp_sock through it: CONFIG_DEBUG_INFO_BTF=y)');
  for (const t of TOOLS) if (spawnSync('sh', ['-c', `command -v ${t}`]).status !== 0) problems.push(`${t} is not installed`);
  for (const p of CNI_PLUGINS) if (!existsSync(p)) problems.push(`${p} is missing (Debian's containernetworking-plugins)`);
  const netns = execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' }).split('\n').filter((l) => /^nm-/.test(l));
  if (netns.length > 0) problems.push(`network namespaces left by an earlier run: ${netns.join(', ')} (nodemesh down, or ip netns del)`);
  // Ports may still be closing after the unit project: wait for them a little, then name the holders.
  let held = heldPorts();
  for (let i = 0; i < 30 && held.length > 0; i++) {
    await new Promise((r) => setTimeout(r, 1000));
    held = heldPorts();
  }
  for (const l of held) problems.push(`a mesh port is taken in the root netns: ${l.trim()}`);
  const kernel = readFileSync('/proc/sys/kernel/osrelease', 'utf8').trim();
  if (problems.length > 0) {
    throw new Error(`this machine cannot run the privileged suites (kernel ${kernel}):\n  - ${problems.join('\n  - ')}`);
  }
  process.stdout.write(`preflight: kernel ${kernel}, bpffs, cgroup v2 and BTF present, tools present, mesh ports free\n`);
}
