// `nodemesh doctor`: checks that this machine can run the agent and the simulator, and says
// exactly what is missing and how to get it.
import { accessSync, constants, existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Command } from './command.js';
import { packageRoot } from '../cluster/index.js';

interface Check {
  name: string;
  ok: boolean;
  fix?: string;
  detail?: string;
}

function mountOf(fstype: string): string | undefined {
  try {
    for (const line of readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
      const [pre, post] = line.split(' - ');
      if (!pre || !post) continue;
      if (post.split(' ')[0] === fstype) return pre.split(' ')[4];
    }
  } catch {
    /* not Linux */
  }
  return undefined;
}

function executable(p: string): boolean {
  try {
    accessSync(p, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

export function runChecks(): Check[] {
  const root = typeof process.getuid === 'function' && process.getuid() === 0;
  const major = Number(process.versions.node.split('.')[0]);
  const cg2 = mountOf('cgroup2');
  const bpffs = mountOf('bpf');
  return [
    { name: 'running as root', ok: root, fix: 'run as root (the agent loads eBPF and enters namespaces)' },
    { name: `Node.js >= 22 (have ${process.versions.node})`, ok: major >= 22, fix: 'run `make node-runtime` (installs Node 24 under .tools/)' },
    { name: `cgroup v2 mounted${cg2 ? ` at ${cg2}` : ''}`, ok: !!cg2, fix: 'mount -t cgroup2 none /sys/fs/cgroup/unified (or boot with systemd.unified_cgroup_hierarchy=1)' },
    { name: `bpffs${bpffs ? ` at ${bpffs}` : ' (the agent mounts /sys/fs/bpf when missing)'}`, ok: true },
    { name: 'kernel BTF (/sys/kernel/btf/vmlinux)', ok: existsSync('/sys/kernel/btf/vmlinux'), fix: 'a kernel built with CONFIG_DEBUG_INFO_BTF=y' },
    { name: 'CNI plugins bridge, host-local, loopback in /usr/lib/cni', ok: ['bridge', 'host-local', 'loopback'].every((p) => executable(`/usr/lib/cni/${p}`)), fix: 'apt-get install containernetworking-plugins' },
    { name: 'nsenter and ip (util-linux, iproute2)', ok: ['/usr/bin/nsenter', '/usr/sbin/ip', '/sbin/ip', '/bin/ip'].some(executable), fix: 'apt-get install util-linux iproute2' },
    { name: 'BPF objects built (bpf/build/redirect.bpf.o)', ok: existsSync(join(packageRoot, 'bpf', 'build', 'redirect.bpf.o')), fix: 'make bpf (needs clang, llvm, libbpf-dev)' },
    { name: 'native addon built', ok: existsSync(join(packageRoot, 'native', 'build', 'Release', 'nodemesh_native.node')), fix: 'make addon' },
    { name: 'nodemesh-cni plugin built', ok: existsSync(join(packageRoot, 'native', 'build', 'nodemesh-cni')), fix: 'make cni' },
  ];
}

export const doctorCommand: Command = {
  path: ['doctor'],
  summary: 'check that this machine can run the agent and the simulator',
  help: `Usage: nodemesh doctor

Checks root, Node.js, cgroup v2, bpffs, BTF, the CNI plugins and the build outputs, and says
how to fix each missing piece. Exits 1 if anything required is missing.
`,
  async run() {
    const checks = runChecks();
    for (const c of checks) process.stdout.write(`${c.ok ? 'ok  ' : 'FAIL'}  ${c.name}${c.ok || !c.fix ? '' : `\n      fix: ${c.fix}`}\n`);
    return checks.every((c) => c.ok) ? 0 : 1;
  },
};
