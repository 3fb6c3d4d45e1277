// `nodemesh agent`: runs the node agent in the foreground.
import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { resolve } from 'node:path';
import { readTokenFile, type ControlPlaneConnection } from '../xds/index.js';
import { Agent, ConfigDirPodSource, defaultWorkers, parseEndpoint } from '../agent/index.js';
import { DEFAULT_PIN_ROOT, stateDir } from '../net/index.js';
import { log } from '../log.js';
import { parse, usageError, type Command } from './command.js';
import { parseAccessLogMode } from '../telemetry/index.js';

const help = `Usage: nodemesh agent --control-plane <addr> --token-file <f> --root-cert <f> [options]
       nodemesh agent --config <dir> [options]        (local mode)

Runs the node agent in the foreground: loads the eBPF redirection programs, listens for the
nodemesh-cni plugin, enrolls pods labelled nodemesh.io/dataplane-mode=ambient (or in a
namespace so labelled), and proxies their traffic. Needs root. The plugin is chained into
the node's CNI config beforehand by \`nodemesh install-cni\` (the DaemonSet's init container;
\`nodemesh up\` and \`nodemesh sim agent\` run it for a simulated node).

With --control-plane, workloads, services, authorization policies and workload
certificates come from the control plane (delta xDS over TLS, authenticated by this node's
token), the agent reports its pods' IPs to it, and it is ready after the first full sync.
In local mode (--config) pod metadata comes from a directory of Kubernetes YAML, no control
plane is used, and no policy is enforced.

With --kubeconfig (or --in-cluster; control-plane mode only) the agent also watches the Pods of
its node (fieldSelector spec.nodeName=<--node>) and the Namespaces in the Kubernetes API:
list+watch informers that relist on 410 Gone and reconnect with backoff. Once both have listed,
and on every change, it reconciles: a running pod that opted in but that no CNI ADD brought
(it started before the agent, or the agent lost its state) is adopted, its netns found as the
one of a process (/proc/<pid>/ns/net; needs the host PID namespace) holding the pod's
status.podIP; a pod whose label or namespace opts in later is enrolled; a pod that opts out, or
that the API deleted, is unenrolled. hostNetwork pods, pods without an IP and pods not Running
or Pending are never adopted. The CNI plugin stays the fast path. While the API is away the
agent keeps what it has enrolled and stays ready; /config_dump shows a "kubernetes" block.

Options:
  --control-plane <addr> control plane gRPC address, e.g. 127.0.0.1:15012
  --token-file <file>   the credential that proves this node, re-read for every connection:
                        with a --config control plane this node's token (\`nodemesh
                        control-plane node-token --node <name>\`, minted for the --node name);
                        on Kubernetes the pod's projected ServiceAccount token (audience
                        nodemesh, e.g. /var/run/secrets/nodemesh/token), which kubelet rotates
  --root-cert <file>    mesh root certificate the control plane's certificate chains to
  --kubeconfig <file>   watch this node's Pods in the Kubernetes API with this kubeconfig
                        (its current context), to adopt and reconcile them
  --in-cluster          ... as the agent pod's service account (the DaemonSet's way; RBAC:
                        list and watch on pods and namespaces)
  --config <dir>        directory of Kubernetes YAML (local mode)
  --state-dir <dir>     state directory (default $NODEMESH_STATE_DIR or /run/nodemesh)
  --pin-root <dir>      bpffs directory for pinned maps and links (default ${DEFAULT_PIN_ROOT})
  --observe-cgroup <dir> the kubelet's pod cgroup parent, where the connections of pods that are
                        not enrolled are observed for \`nodemesh capture\` (never redirected);
                        default: kubepods.slice or kubepods under the cgroup v2 root, whichever
                        exists; 'none' turns it off
  --capture on|off      node-level capture (default on). off: no observers, no records kept
                        for \`nodemesh capture\`, /debug/capture refuses; the redirect programs
                        still check one BPF array per connection
  --access-log <mode>   per-request access log of HTTP ports, one JSON line on stdout:
                        off (default), errors (failed requests: 5xx, 4xx with flags), all
                        (rate-capped at 1000 lines/s; failed requests are never dropped for
                        the sampling, only for the cap)
  --node <name>         node name (default: the host name)
  --admin <addr>        admin endpoint (default 127.0.0.1:15000)
  --metrics <addr>      Prometheus endpoint (default 0.0.0.0:15020)
  --ready <addr>        readiness endpoint (default 0.0.0.0:15021)
  --trust-domain <td>   SPIFFE trust domain (default cluster.local)
  --connect-timeout <ms> upstream connect timeout before the client is reset (default 5000)
  --idle-timeout <s>    close a relayed connection after this many seconds without a byte
                        either way (default 3600, as Envoy's tcp_proxy); 0 disables
  --splice <on|off>     same-node kernel splice (default on): once a connection between two
                        TCP sockets of the proxy is authorized, the kernel moves its bytes
                        (sockmap stream verdict) and the proxy only watches its ends; off
                        relays every byte in the proxy; the default comes from
                        NODEMESH_SPLICE when it is set
  --workers <n|auto>    proxies to run, the main thread's included (default auto: the CPUs
                        this process may use, by its cgroup's cpu.max or the CPU count, at
                        most 8); n-1 worker threads each hold their own sockets in every
                        pod's SO_REUSEPORT groups and the kernel spreads connections over
                        them; the default comes from NODEMESH_WORKERS when it is set
  --no-install-cni      the agent itself never edits a CNI config; given to \`sim agent\`
                        (or \`nodemesh up\`'s agents), skips the install-cni step run before it
  --lb <policy>         how a Service VIP picks among ready endpoints: round-robin (default)
                        or least-conn (fewest open connections)
  --keep-denied-connections
                        leave open connections running when a policy change denies them
                        (Istio's behaviour); by default they are reset within a second
  --drain-seconds <s>   on SIGTERM/SIGINT, let open connections run this long before they
                        are closed (default 30, as ztunnel's); 0 closes them at once
  -h, --help            this help

Upgrades: a new agent started beside a running one (a DaemonSet rolling update with surge)
binds beside it (SO_REUSEPORT), takes the CNI socket and its pods' inbound listeners, and
the two share new connections until the old one is stopped. Neither removes what the other
registered.

Stops on SIGINT/SIGTERM: new connections go to another agent of the node, or are refused
(outbound) and dropped (inbound) when there is none; open ones keep running for
--drain-seconds, then are closed; a second signal closes them at once. Pinned programs stay,
so enrolled pods keep failing closed until the next agent adopts them; 'nodemesh down'
removes everything.
`;

export const agentCommand: Command = {
  path: ['agent'],
  summary: 'run the node agent (eBPF capture + shared proxy) in the foreground',
  help,
  async run(argv) {
    const { values } = parse(argv, {
      config: { type: 'string' },
      'state-dir': { type: 'string' },
      'pin-root': { type: 'string' },
      'observe-cgroup': { type: 'string' },
      capture: { type: 'string' },
      splice: { type: 'string' },
      workers: { type: 'string' },
      'access-log': { type: 'string' },
      node: { type: 'string' },
      admin: { type: 'string' },
      metrics: { type: 'string' },
      ready: { type: 'string' },
      'trust-domain': { type: 'string' },
      'connect-timeout': { type: 'string' },
      'idle-timeout': { type: 'string' },
      'no-install-cni': { type: 'boolean' },
      'keep-denied-connections': { type: 'boolean' },
      'drain-seconds': { type: 'string' },
      lb: { type: 'string' },
      'control-plane': { type: 'string' },
      'token-file': { type: 'string' },
      'root-cert': { type: 'string' },
      kubeconfig: { type: 'string' },
      'in-cluster': { type: 'boolean' },
    }, false);
    if (!values.config === !values['control-plane']) throw usageError('give either --control-plane <addr> or --config <dir> (local mode); see nodemesh agent --help');
    let controlPlane: ControlPlaneConnection | undefined;
    if (values['control-plane']) {
      if (!values['token-file'] || !values['root-cert']) throw usageError('--control-plane needs --token-file and --root-cert');
      let rootCertPem: string;
      // Read again for every stream and call (a rotated projected token is picked up); the last
      // good token stays if the file is unreadable for a moment.
      const token = readTokenFile(values['token-file']);
      try {
        rootCertPem = readFileSync(values['root-cert'], 'utf8');
        token();
      } catch (e) {
        throw usageError(`cannot read the control plane credentials: ${(e as Error).message}`);
      }
      controlPlane = { address: values['control-plane'], rootCertPem, token, nodeName: values.node ?? hostname() };
    }
    if (values.kubeconfig !== undefined && values['in-cluster']) throw usageError('give --kubeconfig <file> or --in-cluster, not both');
    const kube = values.kubeconfig !== undefined ? { kubeconfig: resolve(values.kubeconfig) } : values['in-cluster'] ? { inCluster: true } : undefined;
    if (kube && !controlPlane) throw usageError('--kubeconfig and --in-cluster are for the control-plane mode (--control-plane); in local mode pod metadata comes from --config');
    const sd = stateDir(values['state-dir']);
    const timeout = values['connect-timeout'] ? Number(values['connect-timeout']) : undefined;
    if (timeout !== undefined && !(timeout > 0)) throw usageError('--connect-timeout must be a positive number of milliseconds');
    const idle = values['idle-timeout'] !== undefined ? Number(values['idle-timeout']) : undefined;
    if (idle !== undefined && !(Number.isFinite(idle) && idle >= 0)) throw usageError('--idle-timeout must be a number of seconds, 0 or more (0 disables it)');
    const drain = values['drain-seconds'] !== undefined ? Number(values['drain-seconds']) : 30;
    if (!(Number.isFinite(drain) && drain >= 0)) throw usageError('--drain-seconds must be a number of seconds, 0 or more');
    const capture = values.capture ?? 'on';
    if (capture !== 'on' && capture !== 'off') throw usageError(`--capture must be on or off, got ${JSON.stringify(capture)}`);
    const splice = values.splice ?? process.env.NODEMESH_SPLICE ?? 'on';
    if (splice !== 'on' && splice !== 'off') throw usageError(`--splice (or NODEMESH_SPLICE) must be on or off, got ${JSON.stringify(splice)}`);
    const workersArg = values.workers ?? process.env.NODEMESH_WORKERS ?? 'auto';
    const workers = workersArg === 'auto' ? defaultWorkers() : Number(workersArg);
    if (!(Number.isInteger(workers) && workers >= 1 && workers <= 64)) throw usageError(`--workers (or NODEMESH_WORKERS) must be auto or a whole number from 1 to 64, got ${JSON.stringify(workersArg)}`);
    const lb = values.lb ?? 'round-robin';
    if (lb !== 'round-robin' && lb !== 'least-conn') throw usageError(`--lb must be round-robin or least-conn, got ${JSON.stringify(lb)}`);
    const agent = new Agent({
      lb,
      stateDir: sd,
      ...(values['pin-root'] ? { pinRoot: values['pin-root'] } : {}),
      ...(values['observe-cgroup'] ? { observeCgroup: values['observe-cgroup'] } : {}),
      capture: capture === 'on',
      splice: splice === 'on',
      workers,
      accessLog: parseAccessLogMode(values['access-log'] ?? 'off'),
      ...(values.node ? { nodeName: values.node } : {}),
      ...(values['trust-domain'] ? { trustDomain: values['trust-domain'] } : {}),
      ...(values.admin ? { admin: parseEndpoint(values.admin, '--admin') } : {}),
      ...(values.metrics ? { metrics: parseEndpoint(values.metrics, '--metrics') } : {}),
      ...(values.ready ? { ready: parseEndpoint(values.ready, '--ready') } : {}),
      ...(timeout ? { connectTimeoutMs: timeout } : {}),
      ...(idle !== undefined ? { idleTimeoutMs: Math.round(idle * 1000) } : {}),
      closeDeniedConnections: !values['keep-denied-connections'],
      drainMs: Math.round(drain * 1000),
      ...(values.config ? { podSource: new ConfigDirPodSource(resolve(values.config), log) } : {}),
      ...(controlPlane ? { controlPlane } : {}),
      ...(kube ? { kubernetes: kube } : {}),
      log,
    });
    // The first signal starts the drain; another one ends it.
    const stopped = new Promise<void>((res) => {
      const stop = () => {
        process.removeListener('SIGINT', stop);
        process.removeListener('SIGTERM', stop);
        process.on('SIGINT', () => agent.endDrain());
        process.on('SIGTERM', () => agent.endDrain());
        agent.stop().then(res, res);
      };
      process.on('SIGINT', stop);
      process.on('SIGTERM', stop);
    });
    await agent.start();
    await stopped;
    return 0;
  },
};
