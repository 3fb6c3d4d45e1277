// `nodemesh up`, `nodemesh down` and `nodemesh sim kubelet`: thin commands over cluster/.
import { CLUSTER_CP_ADDRESS, CLUSTER_KUBE_API, CP_ADDRESS, down, Kubelet, up } from '../cluster/index.js';
import { log } from '../log.js';
import { DEFAULT_PIN_ROOT, stateDir } from '../net/index.js';
import { parse, usageError, type Command } from './command.js';

const API_RELAY = `${CLUSTER_KUBE_API.host}:${CLUSTER_KUBE_API.port}`;

export const upCommand: Command = {
  path: ['up'],
  summary: 'bring up simulated pods and the node agent in the background',
  help: `Usage: nodemesh up <dir> [--state-dir <dir>] [--local | --kubeconfig <file>]

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

With --kubeconfig <file>, the mesh runs on that Kubernetes API server (its current context;
any server the host reaches, e.g. a stand-in on 127.0.0.1), as on a cluster:
  - the objects of <dir> are created through the API, as \`kubectl create -f <dir>\` would
    (ones that exist already are left as they are), plus the ServiceAccounts its Pods name
    and it does not declare; Pods naming no node are bound (pods/binding) to the default node;
  - every simulated node becomes a Node (spec.podCIDR: its pod subnet) whose kubelet is the
    simulator (\`nodemesh sim kubelet\`, in the background): it runs the Pods bound to its
    nodes, including ones created later through the API, removes the ones deleted, writes
    their status (podIP, phase, Ready) and gives each its ServiceAccount token
    (TokenRequest; the files are in $NODEMESH_SERVICEACCOUNT_DIR of its processes);
  - the control plane reads the API (--kubeconfig), and each agent proves its node with the
    projected ServiceAccount token (audience nodemesh) of its own Pod
    (nodemesh-system/nodemesh-agent-<node>, hostNetwork), checked with TokenReview;
  - with several nodes, the API is offered on the cluster network at ${API_RELAY}, a
    relay to the kubeconfig's server (and nowhere else) run by the kubelet; the control plane
    gets a kubeconfig for that address with tls-server-name set to the server's own name.
An API that cannot be reached or refuses the kubeconfig's credentials fails \`up\` at once,
naming the server. A failed first \`up\` leaves nothing behind, in the API neither.

State and logs: <state-dir>/agent/agent.log (one node) or
<state-dir>/sim/nodes/<node>/agent/agent.log (several), <state-dir>/control-plane/control-plane.log,
<state-dir>/kube/kubelet.log (--kubeconfig), <state-dir>/sim/ (default /run/nodemesh).
Stop with 'nodemesh down'.
`,
  async run(argv) {
    const { values, positionals } = parse(argv, { 'state-dir': { type: 'string' }, local: { type: 'boolean' }, kubeconfig: { type: 'string' } });
    if (positionals.length !== 1) throw usageError('expected exactly one config directory: nodemesh up <dir>');
    await up(positionals[0]!, stateDir(values['state-dir']), { local: values.local ?? false, ...(values.kubeconfig ? { kubeconfig: values.kubeconfig } : {}) });
    return 0;
  },
};

export const downCommand: Command = {
  path: ['down'],
  summary: 'stop and remove everything `nodemesh up` started',
  help: `Usage: nodemesh down [--state-dir <dir>] [--pin-root <dir>]

Removes the simulated pods, stops the agent, unchains nodemesh-cni, and removes the pinned
eBPF programs and maps. Safe to run twice.

After \`up --kubeconfig\`, it first stops the kubelet (pods are not recreated), removes every
pod and node as above, and then deletes through the API exactly the objects \`up\` created
(each only while it still has the uid \`up\` saw): the directory's objects, the ServiceAccounts
it added, the Nodes, and the agents' Pods, ServiceAccount and namespace. Objects that existed
before \`up\`, and ones others created since (e.g. Pods made with kubectl), are left in the API;
Pods of theirs bound to the simulated nodes no longer run anywhere. When the API cannot be
reached, everything local still goes, and the list of what is left there stays in
<state-dir>/kube/created.jsonl for the next \`nodemesh down\`.
`,
  async run(argv) {
    const { values } = parse(argv, { 'state-dir': { type: 'string' }, 'pin-root': { type: 'string' } }, false);
    await down(stateDir(values['state-dir']), values['pin-root'] ?? DEFAULT_PIN_ROOT);
    return 0;
  },
};

export const kubeletCommand: Command = {
  path: ['sim', 'kubelet'],
  summary: 'Run the simulator as the kubelet of its nodes on a Kubernetes API (what `up --kubeconfig` starts)',
  help: `Usage: nodemesh sim kubelet [--state-dir <dir>]

Runs in the foreground what \`nodemesh up --kubeconfig\` starts in the background, from the
record it wrote (<state-dir>/kube/cluster.json: the kubeconfig, the mode, the nodes):
  - watches the Pods bound to each simulated node (fieldSelector spec.nodeName=<node>) and
    runs them with the simulator (netns, cgroup, CNI chain, processes started in the
    directory \`up\` was given), restarting containers that exit (restartPolicy Always) and
    removing pods deleted from the API (or bound elsewhere);
  - writes each pod's status back (status subresource: phase, podIP, hostIP, the Ready
    condition; Pending with Ready=False and the reason when it cannot be run);
  - gives each pod its ServiceAccount token for the API (TokenRequest, bound to the pod,
    renewed at 80% of its lifetime) in <state-dir>/kube/pods/<uid>/serviceaccount/ (token,
    ca.crt, namespace; $NODEMESH_SERVICEACCOUNT_DIR of its processes), and every projected
    serviceAccountToken volume its own (the agents' token for audience nodemesh);
  - in multi-node mode, relays ${API_RELAY} in netns nm-cluster to the kubeconfig's server.
While the API is unreachable, what runs keeps running and nothing is removed; the watches
relist and status is written once it answers. hostNetwork Pods are not run (the agents \`up\`
starts are the nodes' only host-network processes). Stops on SIGINT/SIGTERM, leaving the
pods running, as a kubelet restart does.
`,
  async run(argv) {
    const { values } = parse(argv, { 'state-dir': { type: 'string' } }, false);
    const k = await Kubelet.start({ sd: stateDir(values['state-dir']), log });
    await new Promise<void>((resolveStop) => {
      const stop = () => {
        process.off('SIGINT', stop);
        process.off('SIGTERM', stop);
        k.stop().then(resolveStop, resolveStop);
      };
      process.on('SIGINT', stop);
      process.on('SIGTERM', stop);
    });
    return 0;
  },
};
