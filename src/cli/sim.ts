// `nodemesh sim ...`: the node simulator's commands (pods as netns + cgroup + real CNI plugins).
import { parse, usageError, type Command } from './command.js';
import { CLUSTER_NETNS, CLUSTER_SERVICE_IP, execInPod, listNodes, listPods, runAgentInNode, simDown, simUp, type SimNodeInfo, type SimPodInfo } from '../sim/index.js';

const STATE_DIR_HELP = '  --state-dir <dir>   State dir (default $NODEMESH_STATE_DIR or /run/nodemesh); the simulator uses <dir>/sim/';

function progress(line: string): void {
  process.stderr.write(`sim: ${line}\n`);
}

function columns(head: string[], rows: string[][]): string {
  const w = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  return [head, ...rows].map((r) => r.map((c, i) => c.padEnd(w[i]!)).join('  ').trimEnd()).join('\n') + '\n';
}

function table(pods: SimPodInfo[]): string {
  return columns(['POD', 'IP', 'NODE', 'UID', 'STATUS'], pods.map((p) => [`${p.namespace}/${p.name}`, p.ip || '-', p.node, p.uid, p.status]));
}

function nodeTable(nodes: SimNodeInfo[]): string {
  return columns(['NODE', 'IP', 'NETNS', 'POD SUBNET', 'PODS'], nodes.map((n) => [n.name, n.ip ?? '-', n.netns ?? '- (the host)', n.subnet, String(n.pods)]));
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

Nodes. When no Pod names a node (spec.nodeName), the single node is the host itself (host
mode: root netns, bridge nm-br0). When any Pod names one, every node is a network namespace
(nm-node.<node>) with its own pod bridge, subnet 10.244.<i>.0/24, cgroup parent and CNI
config dir (<state-dir>/sim/nodes/<node>/net.d/), joined by a cluster network (netns
${CLUSTER_NETNS}, node IPs 10.240.0.<i+1>); Pods naming no node go to --default-node.
\`nodemesh sim nodes\` lists them, \`nodemesh sim agent <node>\` runs a node's agent.

Idempotent: pods already up with the same spec are left alone and new pods are added.
Pods removed from <dir> are NOT deleted; \`nodemesh sim down\` removes all pods.
A Pod with status.podIP gets that address (CNI "ips" capability); a second sim up with
an address another pod holds fails and changes nothing.

Options:
${STATE_DIR_HELP}
  --subnet <cidr>     Pod subnet when the node config is first written (default 10.244.0.0/24)
  --cni-bin-dir <dir> Extra CNI plugin dir after /usr/lib/cni, repeatable
                      (default <repo>/native/build, or $NODEMESH_CNI_BIN_DIR)
  --node <name>       Host mode: name of the node (default: the host name)
  --multi-node        One netns per node even when no Pod names a node
  --default-node <n>  Multi-node mode: node of Pods without spec.nodeName (default node-0);
                      implies --multi-node
  --nodes-only        Create the nodes but no pods (start each node's agent, then sim up
                      again); prints the nodes
  --ready-timeout <s> Seconds to wait for each pod to be ready (default 30)
  -h, --help          Show this help
`,
  async run(argv) {
    const { values, positionals } = parse(argv, {
      'state-dir': { type: 'string' },
      subnet: { type: 'string' },
      'cni-bin-dir': { type: 'string', multiple: true },
      node: { type: 'string' },
      'multi-node': { type: 'boolean' },
      'default-node': { type: 'string' },
      'nodes-only': { type: 'boolean' },
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
      ...(values['multi-node'] ? { multiNode: true } : {}),
      ...(values['default-node'] !== undefined ? { defaultNode: values['default-node'] } : {}),
      ...(values['nodes-only'] ? { nodesOnly: true } : {}),
      ...(readyTimeoutMs ? { readyTimeoutMs } : {}),
      onProgress: progress,
    });
    if (r.createdNodes.length) progress(`${r.createdNodes.length} node(s) created: ${r.createdNodes.join(', ')}`);
    if (values['nodes-only']) {
      process.stdout.write(nodeTable(r.nodes));
      return 0;
    }
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

In multi-node mode it then stops every process still running inside a node (its agent:
SIGTERM, then SIGKILL after the grace period) and deletes the node netns (their bridges,
veths and routes go with them) and the cluster network.

Without state.json (a crashed run, a wiped state dir) it scans for the simulator's own
objects instead: netns named nm-* (pods, nm-node.* nodes, ${CLUSTER_NETNS}), the bridge
nm-br0, cgroups under nodemesh-sim/. It removes them whichever state dir created them.

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

const nodes: Command = {
  path: ['sim', 'nodes'],
  summary: 'List the simulated nodes',
  help: `Usage: nodemesh sim nodes [--json] [options]

Lists the simulated nodes: name, IP on the cluster network, netns, pod subnet and pod count.
In host mode there is one node, the host itself: its ip and netns are null ("-").
In multi-node mode, run a command inside a node with
  ip netns exec <netns> curl -s 127.0.0.1:15020/metrics
Cluster-wide services (the control plane) can run in netns ${CLUSTER_NETNS}, which every node
reaches at ${CLUSTER_SERVICE_IP}.

Options:
  --json              Print a JSON array of {name, ip, netns, netnsPath, subnet, bridge,
                      netDir, pods, agentStateDir, pinRoot}
${STATE_DIR_HELP}
  -h, --help          Show this help
`,
  async run(argv) {
    const { values, positionals } = parse(argv, { 'state-dir': { type: 'string' }, json: { type: 'boolean' } });
    if (positionals.length > 0) throw usageError('sim nodes takes no arguments');
    const list = listNodes(values['state-dir'] ? { stateDir: values['state-dir'] } : {});
    if (values.json) process.stdout.write(JSON.stringify(list, null, 2) + '\n');
    else if (list.length === 0) process.stderr.write('no simulated nodes (run `nodemesh sim up <dir>`)\n');
    else process.stdout.write(nodeTable(list));
    return 0;
  },
};

const agent: Command = {
  path: ['sim', 'agent'],
  summary: "Run a node agent inside a simulated node's netns",
  help: `Usage: nodemesh sim agent [options] <node> [-- <agent args...>]

Runs \`nodemesh agent <agent args>\` in the foreground inside the node's network namespace
(nsenter --net=/run/netns/nm-node.<node>; the mount namespace stays the host's, so bpffs and
cgroups are visible), passing SIGTERM/SIGHUP on and exiting with the agent's status. In host
mode the agent runs on the host.

It adds these agent flags unless <agent args> already set them:
  --state-dir <state-dir>/sim/nodes/<node>   (host mode: <state-dir>); the agent's files go to
                                             <that dir>/agent/ (cni.sock, pods/, agent.pid)
  --node <node>
  --pin-root /sys/fs/bpf/nodemesh-<node>     (multi-node mode only)
Before the agent, as a node's init container would, it runs \`nodemesh install-cni\` on the
node's CNI config and plugin dirs, chaining nodemesh-cni (relaying to that agent's socket)
into the node's conflist; --no-install-cni among <agent args> skips this.

Create the nodes before their agents start: \`nodemesh sim up --nodes-only <dir>\`.
\`sim down\` stops agents still running in the nodes it removes.

Options:
${STATE_DIR_HELP}
  -h, --help          Show this help (agent options: nodemesh sim agent <node> -- --help)

Example: nodemesh sim agent node-a -- --config examples/multinode
`,
  async run(argv) {
    const dd = argv.indexOf('--');
    const { values, positionals } = parse(dd < 0 ? argv : argv.slice(0, dd), { 'state-dir': { type: 'string' } });
    if (positionals.length !== 1) throw usageError('sim agent takes one node: nodemesh sim agent <node> [-- <agent args...>]');
    return runAgentInNode(positionals[0]!, dd < 0 ? [] : argv.slice(dd + 1), values['state-dir'] ? { stateDir: values['state-dir'] } : {});
  },
};

export const simCommands: Command[] = [up, pods, nodes, exec, agent, down];
