// `nodemesh agent`: runs the node agent in the foreground.
import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { resolve } from 'node:path';
import { readTokenFile, type ControlPlaneConnection } from '../xds/index.js';
import { Agent, ConfigDirPodSource, parseEndpoint } from '../agent/index.js';
import { DEFAULT_PIN_ROOT, stateDir } from '../net/index.js';
import { log } from '../log.js';
import { parse, usageError, type Command } from './command.js';

const help = `Usage: nodemesh agent --control-plane <addr> --token-file <f> --root-cert <f> [options]
       nodemesh agent --config <dir> [options]        (local mode)

Runs the node agent in the foreground: loads the eBPF redirection programs, listens for the
nodemesh-cni plugin, enrolls pods labelled nodemesh.io/dataplane-mode=ambient (or in a
namespace so labelled), and proxies their traffic. Needs root. The plugin is chained into
the node's CNI config beforehand by \`nodemesh install-cni\` (the DaemonSet's init container;
\`nodemesh up\` and \`nodemesh sim agent\` run it for a simulated node).

With --control-plane, workloads, services, authorization policies and workload
certificates come from the control plane (delta xDS over TLS, authenticated by the bootstrap
token), the agent reports its pods' IPs to it, and it is ready after the first full sync.
In local mode (--config) pod metadata comes from a directory of Kubernetes YAML, no control
plane is used, and no policy is enforced.

Options:
  --control-plane <addr> control plane gRPC address, e.g. 127.0.0.1:15012
  --token-file <file>   bootstrap token (written by the control plane at start)
  --root-cert <file>    mesh root certificate the control plane's certificate chains to
  --config <dir>        directory of Kubernetes YAML (local mode)
  --state-dir <dir>     state directory (default $NODEMESH_STATE_DIR or /run/nodemesh)
  --pin-root <dir>      bpffs directory for pinned maps and links (default ${DEFAULT_PIN_ROOT})
  --node <name>         node name (default: the host name)
  --admin <addr>        admin endpoint (default 127.0.0.1:15000)
  --metrics <addr>      Prometheus endpoint (default 0.0.0.0:15020)
  --ready <addr>        readiness endpoint (default 0.0.0.0:15021)
  --trust-domain <td>   SPIFFE trust domain (default cluster.local)
  --connect-timeout <ms> upstream connect timeout before the client is reset (default 5000)
  --no-install-cni      the agent itself never edits a CNI config; given to \`sim agent\`
                        (or \`nodemesh up\`'s agents), skips the install-cni step run before it
  --lb <policy>         how a Service VIP picks among ready endpoints: round-robin (default)
                        or least-conn (fewest open connections)
  --keep-denied-connections
                        leave open connections running when a policy change denies them
                        (Istio's behaviour); by default they are reset within a second
  -h, --help            this help

Stops on SIGINT/SIGTERM. Pinned programs stay, so enrolled pods keep failing closed until
the next agent adopts them; 'nodemesh down' removes everything.
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
      node: { type: 'string' },
      admin: { type: 'string' },
      metrics: { type: 'string' },
      ready: { type: 'string' },
      'trust-domain': { type: 'string' },
      'connect-timeout': { type: 'string' },
      'no-install-cni': { type: 'boolean' },
      'keep-denied-connections': { type: 'boolean' },
      lb: { type: 'string' },
      'control-plane': { type: 'string' },
      'token-file': { type: 'string' },
      'root-cert': { type: 'string' },
    }, false);
    if (!values.config === !values['control-plane']) throw usageError('give either --control-plane <addr> or --config <dir> (local mode); see nodemesh agent --help');
    let controlPlane: ControlPlaneConnection | undefined;
    if (values['control-plane']) {
      if (!values['token-file'] || !values['root-cert']) throw usageError('--control-plane needs --token-file and --root-cert');
      let rootCertPem: string;
      try {
        rootCertPem = readFileSync(values['root-cert'], 'utf8');
        readTokenFile(values['token-file'])();
      } catch (e) {
        throw usageError(`cannot read the control plane credentials: ${(e as Error).message}`);
      }
      controlPlane = { address: values['control-plane'], rootCertPem, token: readTokenFile(values['token-file']), nodeName: values.node ?? hostname() };
    }
    const sd = stateDir(values['state-dir']);
    const timeout = values['connect-timeout'] ? Number(values['connect-timeout']) : undefined;
    if (timeout !== undefined && !(timeout > 0)) throw usageError('--connect-timeout must be a positive number of milliseconds');
    const lb = values.lb ?? 'round-robin';
    if (lb !== 'round-robin' && lb !== 'least-conn') throw usageError(`--lb must be round-robin or least-conn, got ${JSON.stringify(lb)}`);
    const agent = new Agent({
      lb,
      stateDir: sd,
      ...(values['pin-root'] ? { pinRoot: values['pin-root'] } : {}),
      ...(values.node ? { nodeName: values.node } : {}),
      ...(values['trust-domain'] ? { trustDomain: values['trust-domain'] } : {}),
      ...(values.admin ? { admin: parseEndpoint(values.admin, '--admin') } : {}),
      ...(values.metrics ? { metrics: parseEndpoint(values.metrics, '--metrics') } : {}),
      ...(values.ready ? { ready: parseEndpoint(values.ready, '--ready') } : {}),
      ...(timeout ? { connectTimeoutMs: timeout } : {}),
      closeDeniedConnections: !values['keep-denied-connections'],
      ...(values.config ? { podSource: new ConfigDirPodSource(resolve(values.config), log) } : {}),
      ...(controlPlane ? { controlPlane } : {}),
      log,
    });
    const stopped = new Promise<void>((res) => {
      const stop = () => {
        agent.stop().then(res, res);
      };
      process.once('SIGINT', stop);
      process.once('SIGTERM', stop);
    });
    await agent.start();
    await stopped;
    return 0;
  },
};
