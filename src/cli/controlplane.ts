// `nodemesh control-plane`: runs the control plane in the foreground, or checks a config dir;
// `nodemesh control-plane node-token` mints a node's credential.
import { join, resolve } from 'node:path';
import { AGENT_TOKEN_AUDIENCE, checkConfigDir, ControlPlane, DEFAULT_ADMIN, DEFAULT_AGENT_SERVICE_ACCOUNT, DEFAULT_LISTEN, formatProblems, mintNodeToken, readNodeSecret } from '../controlplane/index.js';
import { writeFileAtomic } from '../files.js';
import { listConfigFiles } from '../k8s/index.js';
import { parse, usageError, type Command } from './command.js';

const help = `Usage: nodemesh control-plane --config <dir> [options]
       nodemesh control-plane --kubeconfig <file> | --in-cluster [options]
       nodemesh control-plane --check <dir>

Runs the control plane in the foreground. It watches a directory of Kubernetes YAML (Pods,
Services, Namespaces, ServiceAccounts, security.istio.io AuthorizationPolicy and
PeerAuthentication, gateway.networking.k8s.io HTTPRoute), merges the pod IPs node agents
report, and serves workloads, services and L4 policy to the agents over delta xDS. Its
built-in CA signs each agent's SPIFFE certificates. Changes to the directory reach the agents
within a second; a bad file is reported (log, /debug/config-errors) and never withdraws what
was already served.

With --kubeconfig (or --in-cluster, the default inside a pod: no --config and
KUBERNETES_SERVICE_HOST set) it reads these kinds (not ServiceAccounts) from the API instead, plus
EndpointSlices (for Services without selectors), RequestAuthentication, VirtualService and
DestinationRule (compiled for L7 with HTTPRoute): list+watch informers that relist on 410 Gone
and reconnect with backoff. It serves once every kind has been listed; a kind the server does
not serve (a CRD not installed) is skipped and looked for again every 30s. While the API is
unreachable the last good state stays served and /healthz/ready answers 503 "degraded: ...".
It writes HTTPRoute status.parents (controllerName nodemesh.io/mesh-controller) and the
AuthorizationPolicy ZtunnelAccepted condition. Pod IPs come from the API (status.podIP).
See docs/control-plane.md, "Kubernetes source".

Each agent authenticates with a credential that proves its node: it gets certificates only
for pods placed on that node, and may report only those pods, with IPs inside that node's
pod CIDRs. With --config that is its own node token (\`nodemesh control-plane node-token\`).
On Kubernetes it is the agent pod's projected ServiceAccount token (audience nodemesh),
checked with a TokenReview: the ServiceAccount must be --agent-service-account's and the
node is the one of the pod the token is bound to; no node secret or node token exists there.

In the state directory (kept across restarts):
  node-secret     the key node tokens are signed with (mode 0600; or --node-secret);
                  directory mode only
  admin-token     opens /debug/* to non-loopback peers; proves no node (mode 0600)
  pod-status.json what the nodes last reported, served again after a restart (mode 0600)
  root-cert.pem   the mesh root agents trust (root-key.pem stays here, mode 0600)
  cert.pem        the control plane's serving certificate (key.pem, mode 0600)

Options:
  --config <dir>          directory of Kubernetes YAML
  --kubeconfig <file>     read the Kubernetes API with this kubeconfig (its current context)
  --in-cluster            read the Kubernetes API as the pod's service account
  --listen <host:port>    gRPC listener for xDS, CA and pod status (default ${DEFAULT_LISTEN})
  --admin <host:port>     HTTP admin: /healthz/ready (open), /debug/config-errors and
                          /debug/resources (loopback peers, or the admin token)
                          (default ${DEFAULT_ADMIN})
  --default-node <name>   the node pods without spec.nodeName run on (default: the host
                          name; \`nodemesh up\` gives the simulator's)
  --node-secret <file>    the node token key (default <state-dir>/node-secret, generated);
                          directory mode only
  --agent-service-account <ns>/<name>
                          Kubernetes mode: the ServiceAccount the agent DaemonSet runs as,
                          whose pod-bound tokens prove an agent's node
                          (default ${DEFAULT_AGENT_SERVICE_ACCOUNT})
  --trust-domain <td>     SPIFFE trust domain (default cluster.local)
  --root-namespace <ns>   namespace whose policies apply mesh-wide (default istio-system)
  --cluster-id <id>       cluster id in workload uids (default Kubernetes)
  --state-dir <dir>       where the secrets, pod status and certificates go
                          (default $NODEMESH_STATE_DIR/control-plane, or /run/nodemesh/control-plane)
  --root-cert <file>      use this root CA certificate instead of generating one
  --root-key <file>       ... and its key (ECDSA P-256, PKCS#8 PEM)
  --cert-ttl <duration>   workload certificate lifetime, e.g. 24h, 30m (default 24h)
  --max-cert-ttl <dur>    longest lifetime granted on request (default 168h)
  --check                 validate the directory, print every problem as file:line, and exit:
                          0 no errors (warnings are printed), 1 errors found
  -h, --help              this help

Stops cleanly on SIGINT/SIGTERM.
`;

/** `90s`, `30m`, `24h`, `7d` or plain seconds. */
export function parseDuration(s: string, what: string): number {
  const m = /^(\d+)(s|m|h|d)?$/.exec(s.trim());
  if (!m) throw usageError(`${what} must be a duration like 90s, 30m, 24h or 7d, got ${JSON.stringify(s)}`);
  const n = Number(m[1]);
  const mult = { s: 1, m: 60, h: 3600, d: 86_400 }[(m[2] ?? 's') as 's' | 'm' | 'h' | 'd'];
  if (n <= 0) throw usageError(`${what} must be positive`);
  return n * mult;
}

export const controlPlaneCommand: Command = {
  path: ['control-plane'],
  summary: 'run the control plane (xDS server, CA) in the foreground, or --check a config dir',
  help,
  async run(argv) {
    const { values, positionals } = parse(argv, {
      config: { type: 'string' },
      listen: { type: 'string' },
      admin: { type: 'string' },
      'trust-domain': { type: 'string' },
      'root-namespace': { type: 'string' },
      'cluster-id': { type: 'string' },
      'state-dir': { type: 'string' },
      'root-cert': { type: 'string' },
      'root-key': { type: 'string' },
      'cert-ttl': { type: 'string' },
      'max-cert-ttl': { type: 'string' },
      'default-node': { type: 'string' },
      'node-secret': { type: 'string' },
      'agent-service-account': { type: 'string' },
      check: { type: 'boolean' },
      kubeconfig: { type: 'string' },
      'in-cluster': { type: 'boolean' },
    });
    if (positionals.length > (values.check ? 1 : 0)) throw usageError(`unexpected argument ${JSON.stringify(positionals[values.check ? 1 : 0])}; see nodemesh control-plane --help`);
    const dir = values.config ?? (values.check ? positionals[0] : undefined);
    const kubeFlags = values.kubeconfig !== undefined || values['in-cluster'] === true;
    if (dir && kubeFlags) throw usageError('give --config <dir> or --kubeconfig/--in-cluster, not both');
    if (values.check && !dir) throw usageError('--check takes a config directory');
    if (dir && values['agent-service-account'] !== undefined) throw usageError('--agent-service-account is for the Kubernetes mode (--kubeconfig or --in-cluster); with --config agents use node tokens');
    if (!dir && values['node-secret'] !== undefined) {
      throw usageError("--node-secret is for the directory mode (--config); on Kubernetes agents authenticate with their pod's ServiceAccount token (audience nodemesh), checked with TokenReview");
    }
    // Inside a pod, with nothing said, the API of the cluster the pod runs in.
    const inCluster = values['in-cluster'] === true || (!dir && !kubeFlags && !!process.env.KUBERNETES_SERVICE_HOST);
    if (!dir && !values.kubeconfig && !inCluster) throw usageError('--config <dir> or --kubeconfig <file> (or --in-cluster) is required; see nodemesh control-plane --help');
    const mesh = {
      ...(values['trust-domain'] ? { trustDomain: values['trust-domain'] } : {}),
      ...(values['root-namespace'] ? { rootNamespace: values['root-namespace'] } : {}),
      ...(values['cluster-id'] ? { clusterId: values['cluster-id'] } : {}),
    };

    if (values.check && dir) {
      listConfigFiles(dir); // throws a clear error for a missing directory
      const r = checkConfigDir(dir, mesh);
      if (r.problems.length > 0) process.stdout.write(formatProblems(r.problems) + '\n');
      const c = r.resources;
      process.stdout.write(
        `${dir}: ${r.errors} error(s), ${r.warnings} warning(s); ${c.pods} pod(s), ${c.services} service(s), ` +
          `${c.authorizationPolicies} AuthorizationPolicy, ${c.peerAuthentications} PeerAuthentication, ${c.httpRoutes} HTTPRoute\n`,
      );
      return r.errors > 0 ? 1 : 0;
    }

    const cp = await ControlPlane.start({
      ...(dir ? { configDir: resolve(dir) } : { kubernetes: values.kubeconfig ? { kubeconfig: resolve(values.kubeconfig) } : { inCluster: true } }),
      stateDir: resolve(defaultStateDir(values['state-dir'])),
      ...(values['default-node'] ? { defaultNode: values['default-node'] } : {}),
      ...(values['node-secret'] ? { nodeSecretFile: resolve(values['node-secret']) } : {}),
      ...(values['agent-service-account'] ? { agentAuth: { serviceAccount: values['agent-service-account'] } } : {}),
      ...(values.listen ? { listen: values.listen } : {}),
      ...(values.admin ? { admin: values.admin } : {}),
      ...mesh,
      ...(values['root-cert'] ? { rootCertFile: resolve(values['root-cert']) } : {}),
      ...(values['root-key'] ? { rootKeyFile: resolve(values['root-key']) } : {}),
      ...(values['cert-ttl'] ? { certTtlSeconds: parseDuration(values['cert-ttl'], '--cert-ttl') } : {}),
      ...(values['max-cert-ttl'] ? { maxCertTtlSeconds: parseDuration(values['max-cert-ttl'], '--max-cert-ttl') } : {}),
    });
    const problems = cp.configErrors();
    process.stdout.write(
      [
        `nodemesh control plane serving ${cp.address} (xDS, CA, pod status); admin http://${cp.adminAddress}`,
        `  config:      ${dir ? resolve(dir) : `Kubernetes API ${cp.readyDetail === 'ready' ? '' : `(${cp.readyDetail}) `}${values.kubeconfig ? `via ${resolve(values.kubeconfig)}` : 'in-cluster'}`} (${problems.errors} error(s), ${problems.warnings} warning(s); see /debug/config-errors)`,
        cp.agentServiceAccount
          ? `  agents:      ServiceAccount ${cp.agentServiceAccount} tokens bound to the agent's pod (audience ${AGENT_TOKEN_AUDIENCE}), checked with TokenReview`
          : `  node secret: ${cp.paths.nodeSecret} (mint agent tokens: nodemesh control-plane node-token --node <name> --pod-cidr <cidr>)`,
        `  admin token: ${cp.paths.adminToken}`,
        // From the API, a Pod's node is its spec.nodeName (the scheduler's); only a config directory has a default node.
        dir ? `  pod status:  ${cp.paths.podStatus}; pods without spec.nodeName run on node ${cp.defaultNode}` : `  pod status:  ${cp.paths.podStatus}; a Pod runs on its spec.nodeName (no default node)`,
        `  root CA:     ${cp.paths.rootCert}`,
        `  serving:     ${cp.paths.servingCert}`,
        `  trust domain ${cp.mesh.trustDomain}`,
        'Press Ctrl-C to stop.',
        '',
      ].join('\n'),
    );
    await new Promise<void>((resolveStop) => {
      const stop = (sig: NodeJS.Signals) => {
        process.off('SIGINT', stop);
        process.off('SIGTERM', stop);
        process.stdout.write(`received ${sig}; stopping\n`);
        cp.stop().then(resolveStop, resolveStop);
      };
      process.on('SIGINT', stop);
      process.on('SIGTERM', stop);
    });
    return 0;
  },
};

const nodeTokenHelp = `Usage: nodemesh control-plane node-token --node <name> --pod-cidr <cidr> [options]

For the directory mode (\`nodemesh control-plane --config\`, the simulator). On Kubernetes
there are no node tokens: each agent uses its pod's projected ServiceAccount token (audience
nodemesh), and a control plane reading the API refuses node tokens.

Mints the credential of one node's agent and prints it (or writes it with --out). Give it to
that node's agent only (\`nodemesh agent --token-file <file> --node <name>\`): it proves that
node to the control plane, which then signs certificates only for pods the config places on
it, and takes pod reports only for those pods with IPs inside the node's pod CIDRs. The token
is an HMAC over the node name and CIDRs with the control plane's node secret, so the control
plane needs no list of tokens; replacing the node secret revokes every token.

Options:
  --node <name>           the node, as pods name it in spec.nodeName (required)
  --pod-cidr <cidr>       the node's pod CIDR (Node spec.podCIDR), repeatable (required);
                          0.0.0.0/0 accepts any IPv4 pod IP (a CNI without per-node ranges)
  --state-dir <dir>       the control plane's state dir, holding node-secret
                          (default $NODEMESH_STATE_DIR/control-plane, or /run/nodemesh/control-plane)
  --node-secret <file>    the node secret file instead (default <state-dir>/node-secret)
  --out <file>            write the token here (mode 0600) instead of printing it
  -h, --help              this help
`;

/** The control plane's state dir: the flag, else $NODEMESH_STATE_DIR/control-plane, else /run/nodemesh/control-plane. */
function defaultStateDir(flag: string | undefined): string {
  return flag ?? join(process.env.NODEMESH_STATE_DIR ?? '/run/nodemesh', 'control-plane');
}

export const nodeTokenCommand: Command = {
  path: ['control-plane', 'node-token'],
  summary: "mint a node agent's credential (bound to its node name and pod CIDRs; directory mode)",
  help: nodeTokenHelp,
  async run(argv) {
    const { values } = parse(argv, {
      node: { type: 'string' },
      'pod-cidr': { type: 'string', multiple: true },
      'state-dir': { type: 'string' },
      'node-secret': { type: 'string' },
      out: { type: 'string' },
    }, false);
    if (!values.node) throw usageError('--node <name> is required; see nodemesh control-plane node-token --help');
    const cidrs = values['pod-cidr'] ?? [];
    if (cidrs.length === 0) throw usageError('--pod-cidr <cidr> is required (the node\'s spec.podCIDR; 0.0.0.0/0 accepts any IPv4 pod IP)');
    const token = mintNodeToken(readNodeSecret(resolve(values['node-secret'] ?? join(defaultStateDir(values['state-dir']), 'node-secret'))), { node: values.node, podCidrs: cidrs });
    if (values.out) writeFileAtomic(resolve(values.out), token + '\n', { mode: 0o600 });
    else process.stdout.write(token + '\n');
    return 0;
  },
};

export const controlPlaneCommands: Command[] = [controlPlaneCommand, nodeTokenCommand];
