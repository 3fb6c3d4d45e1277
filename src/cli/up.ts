// `nodemesh up` and `nodemesh down`: thin commands over cluster/.
import { CLUSTER_CP_ADDRESS, CP_ADDRESS, down, up } from '../cluster/index.js';
import { DEFAULT_PIN_ROOT, stateDir } from '../net/index.js';
import { parse, usageError, type Command } from './command.js';

export const upCommand: Command = {
  path: ['up'],
  summary: 'bring up simulated pods and the node agent in the background',
  help: `Usage: nodemesh up <dir> [--state-dir <dir>] [--local]

Starts the control plane (xDS + CA on ${CP_ADDRESS}, watching <dir>) and the node agent in
the background, then creates every Pod of <dir> with the node simulator (real CNI plugins,
one netns and cgroup per pod). Pods labelled (or in a namespace labelled)
nodemesh.io/dataplane-mode=ambient are captured. Returns once they are.

When Pods name nodes (spec.nodeName), every node is a network namespace of its own: the
control plane then runs on the simulated cluster network (netns nm-cluster, ${CLUSTER_CP_ADDRESS}),
one agent runs in each node (as \`nodemesh sim agent\` would start it), and traffic between
nodes goes over HBONE (mTLS on 15008). Look inside a node with
\`ip netns exec nm-node.<node> curl -s 127.0.0.1:15000/config_dump\`.

With --local, no control plane runs: each agent reads pod metadata from <dir> itself,
enforces no policy and sends traffic between nodes as plain TCP.

State and logs: <state-dir>/agent/agent.log (one node) or
<state-dir>/sim/nodes/<node>/agent/agent.log (several), <state-dir>/control-plane/control-plane.log,
<state-dir>/sim/ (default /run/nodemesh). Stop with 'nodemesh down'.
`,
  async run(argv) {
    const { values, positionals } = parse(argv, { 'state-dir': { type: 'string' }, local: { type: 'boolean' } });
    if (positionals.length !== 1) throw usageError('expected exactly one config directory: nodemesh up <dir>');
    await up(positionals[0]!, stateDir(values['state-dir']), { local: values.local ?? false });
    return 0;
  },
};

export const downCommand: Command = {
  path: ['down'],
  summary: 'stop and remove everything `nodemesh up` started',
  help: `Usage: nodemesh down [--state-dir <dir>] [--pin-root <dir>]

Removes the simulated pods, stops the agent, unchains nodemesh-cni, and removes the pinned
eBPF programs and maps. Safe to run twice.
`,
  async run(argv) {
    const { values } = parse(argv, { 'state-dir': { type: 'string' }, 'pin-root': { type: 'string' } }, false);
    await down(stateDir(values['state-dir']), values['pin-root'] ?? DEFAULT_PIN_ROOT);
    return 0;
  },
};
