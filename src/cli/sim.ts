// `nodemesh sim ...`: the node simulator's commands (pods as netns + cgroup + real CNI plugins).
import { parse, usageError, type Command } from './command.js';
import { execInPod, listPods, simDown, simUp, type SimPodInfo } from '../sim/index.js';

const STATE_DIR_HELP = '  --state-dir <dir>   State dir (default $NODEMESH_STATE_DIR or /run/nodemesh); the simulator uses <dir>/sim/';

function progress(line: string): void {
  process.stderr.write(`sim: ${line}\n`);
}

function table(pods: SimPodInfo[]): string {
  const head = ['POD', 'IP', 'NODE', 'UID', 'STATUS'];
  const rows = pods.map((p) => [`${p.namespace}/${p.name}`, p.ip || '-', p.node, p.uid, p.status]);
  const w = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  return [head, ...rows].map((r) => r.map((c, i) => c.padEnd(w[i]!)).join('  ').trimEnd()).join('\n') + '\n';
}

const up: Command = {
  path: ['sim', 'up'],
  summary: 'Create the Pods of a config dir as simulated pods (netns + cgroup + CNI)',
  help: `Usage: nodemesh sim up <dir> [options]

Creates every Pod in the Kubernetes YAML of <dir> as a simulated pod: a network namespace
wired by the CNI plugins of the node's config (<state-dir>/sim/net.d/, written on first use:
bridge ${'nm-br0'} + host-local), its own cgroup v2 directory, and each container's command +
args running inside both. Other kinds (Namespace, Service, ...) are read by the control
plane, not by the simulator. Prints the pods when they are ready (processes started,
declared ports accepting connections).

Idempotent: pods already up with the same spec are left alone and new pods are added.
Pods removed from <dir> are NOT deleted; \`nodemesh sim down\` removes all pods.
A Pod with status.podIP gets that address (CNI "ips" capability); a second sim up with
an address another pod holds fails and changes nothing.

Options:
${STATE_DIR_HELP}
  --subnet <cidr>     Pod subnet when the node config is first written (default 10.244.0.0/24)
  --cni-bin-dir <dir> Extra CNI plugin dir after /usr/lib/cni, repeatable
                      (default <repo>/native/build, or $NODEMESH_CNI_BIN_DIR)
  --node <name>       Name of the simulated node (default: the host name)
  --ready-timeout <s> Seconds to wait for each pod to be ready (default 30)
  -h, --help          Show this help
`,
  async run(argv) {
    const { values, positionals } = parse(argv, {
      'state-dir': { type: 'string' },
      subnet: { type: 'string' },
      'cni-bin-dir': { type: 'string', multiple: true },
      node: { type: 'string' },
      'ready-timeout': { type: 'string' },
    });
    if (positionals.length !== 1) throw usageError('sim up takes exactly one config directory');
    let readyTimeoutMs: number | undefined;
    if (values['ready-timeout'] !== undefined) {
      const s = Number(values['ready-timeout']);
      if (!(s > 0)) throw usageError('--ready-timeout must be a positive number of seconds');
      readyTimeoutMs = s * 1000;
    }
    const r = await simUp(positionals[0]!, {
      ...(values['state-dir'] ? { stateDir: values['state-dir'] } : {}),
      ...(values.subnet ? { subnet: values.subnet } : {}),
      ...(values['cni-bin-dir'] ? { cniBinDirs: values['cni-bin-dir'] } : {}),
      ...(values.node ? { nodeName: values.node } : {}),
      ...(readyTimeoutMs ? { readyTimeoutMs } : {}),
      onProgress: progress,
    });
    progress(`${r.created.length} created, ${r.restarted.length} restarted, ${r.unchanged.length} unchanged`);
    process.stdout.write(table(r.pods));
    return 0;
  },
};

const pods: Command = {
  path: ['sim', 'pods'],
  summary: 'List the simulated pods',
  help: `Usage: nodemesh sim pods [--json] [options]

Lists the simulated pods: namespace/name, IP, node, uid and status (Running while a
container process is alive, Exited when none is, Creating during or after a crashed sim up).

Options:
  --json              Print a JSON array of {namespace, name, ip, node, uid, netns,
                      netnsPath, cgroup, pids, status, containerId, log}
${STATE_DIR_HELP}
  -h, --help          Show this help
`,
  async run(argv) {
    const { values, positionals } = parse(argv, { 'state-dir': { type: 'string' }, json: { type: 'boolean' } });
    if (positionals.length > 0) throw usageError('sim pods takes no arguments');
    const list = listPods(values['state-dir'] ? { stateDir: values['state-dir'] } : {});
    if (values.json) process.stdout.write(JSON.stringify(list, null, 2) + '\n');
    else if (list.length === 0) process.stderr.write('no simulated pods (run `nodemesh sim up <dir>`)\n');
    else process.stdout.write(table(list));
    return 0;
  },
};

const exec: Command = {
  path: ['sim', 'exec'],
  summary: "Run a command in a pod's netns and cgroup",
  help: `Usage: nodemesh sim exec [options] <namespace>/<pod> -- <command> [args...]

Runs <command> inside the pod's network namespace and cgroup (so the mesh captures its
connections like the pod's own), with the pod's environment and working directory, and
stdin/stdout/stderr inherited. Exits with the command's status (128+n for signal n).
<pod> alone means namespace "default".

Options:
${STATE_DIR_HELP}
  -h, --help          Show this help

Example: nodemesh sim exec demo/client -- curl -sS http://10.244.0.2:8080/
`,
  async run(argv) {
    const dd = argv.indexOf('--');
    if (dd < 0) throw usageError('sim exec needs `--` before the command: nodemesh sim exec <namespace>/<pod> -- <command> [args...]');
    const { values, positionals } = parse(argv.slice(0, dd), { 'state-dir': { type: 'string' } });
    const cmd = argv.slice(dd + 1);
    if (positionals.length !== 1) throw usageError('sim exec takes one pod: <namespace>/<pod>');
    if (cmd.length === 0) throw usageError('sim exec: no command after `--`');
    return execInPod(positionals[0]!, cmd, values['state-dir'] ? { stateDir: values['state-dir'] } : {});
  },
};

const down: Command = {
  path: ['sim', 'down'],
  summary: 'Remove every simulated pod and what the simulator created on the host',
  help: `Usage: nodemesh sim down [options]

Removes every simulated pod: stops its processes (SIGTERM, then cgroup.kill after the
grace period), runs CNI DEL through the
node's chain in reverse (and loopback), deletes its netns and cgroup. Then removes the
bridge, host-local's IPAM data and the cgroup parent, restores net.ipv4.ip_forward and
deletes state.json. Idempotent.

Without state.json (a crashed run, a wiped state dir) it scans for the simulator's own
objects instead: netns named nm-*, the bridge nm-br0, cgroups under nodemesh-sim/. It
removes them whichever state dir created them.

Pod logs (<state-dir>/sim/pods/) and the node's CNI config (<state-dir>/sim/net.d/) are kept.

Options:
${STATE_DIR_HELP}
  --purge             Also delete pod logs and the CNI config: all of <state-dir>/sim
  --grace-period <s>  Seconds processes get after SIGTERM before they are killed (default 3;
                      0 kills at once)
  -h, --help          Show this help
`,
  async run(argv) {
    const { values, positionals } = parse(argv, { 'state-dir': { type: 'string' }, purge: { type: 'boolean' }, 'grace-period': { type: 'string' } });
    if (positionals.length > 0) throw usageError('sim down takes no arguments');
    let gracePeriodMs: number | undefined;
    if (values['grace-period'] !== undefined) {
      const s = Number(values['grace-period']);
      if (!(s >= 0)) throw usageError('--grace-period must be a number of seconds, 0 or more');
      gracePeriodMs = s * 1000;
    }
    const r = await simDown({
      ...(values['state-dir'] ? { stateDir: values['state-dir'] } : {}),
      ...(values.purge ? { purge: true } : {}),
      ...(gracePeriodMs !== undefined ? { gracePeriodMs } : {}),
      onProgress: progress,
    });
    for (const w of r.warnings) process.stderr.write(`warning: ${w}\n`);
    progress(r.removedPods.length === 0 ? 'nothing to remove' : `removed ${r.removedPods.length} pod(s)${r.mode === 'scan' ? ' found by scanning (no state)' : ''}`);
    return 0;
  },
};

export const simCommands: Command[] = [up, pods, exec, down];
