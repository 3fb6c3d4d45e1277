// `nodemesh control-plane`: runs the control plane in the foreground, or checks a config dir.
import { join, resolve } from 'node:path';
import { checkConfigDir, ControlPlane, DEFAULT_ADMIN, DEFAULT_LISTEN, formatProblems } from '../controlplane/index.js';
import { listConfigFiles } from '../k8s/index.js';
import { parse, usageError, type Command } from './command.js';

const help = `Usage: nodemesh control-plane --config <dir> [options]
       nodemesh control-plane --check <dir>

Runs the control plane in the foreground. It watches a directory of Kubernetes YAML (Pods,
Services, Namespaces, ServiceAccounts, security.istio.io AuthorizationPolicy and
PeerAuthentication, gateway.networking.k8s.io HTTPRoute), merges the pod IPs node agents
report, and serves workloads, services and L4 policy to the agents over delta xDS. Its
built-in CA signs each agent's SPIFFE certificates. Changes to the directory reach the agents
within a second; a bad file is reported (log, /debug/config-errors) and never withdraws what
was already served.

At start it writes, in the state directory:
  token          the bootstrap token agents present (mode 0600)
  root-cert.pem  the mesh root agents trust (root-key.pem stays here, mode 0600)
  cert.pem       the control plane's serving certificate (key.pem, mode 0600)

Options:
  --config <dir>          directory of Kubernetes YAML (required)
  --listen <host:port>    gRPC listener for xDS, CA and pod status (default ${DEFAULT_LISTEN})
  --admin <host:port>     HTTP admin: /healthz/ready, /debug/config-errors, /debug/resources
                          (default ${DEFAULT_ADMIN})
  --trust-domain <td>     SPIFFE trust domain (default cluster.local)
  --root-namespace <ns>   namespace whose policies apply mesh-wide (default istio-system)
  --cluster-id <id>       cluster id in workload uids (default Kubernetes)
  --state-dir <dir>       where token and certificates go
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
      check: { type: 'boolean' },
    });
    if (positionals.length > (values.check ? 1 : 0)) throw usageError(`unexpected argument ${JSON.stringify(positionals[values.check ? 1 : 0])}; see nodemesh control-plane --help`);
    const dir = values.config ?? (values.check ? positionals[0] : undefined);
    if (!dir) throw usageError('--config <dir> is required; see nodemesh control-plane --help');
    const mesh = {
      ...(values['trust-domain'] ? { trustDomain: values['trust-domain'] } : {}),
      ...(values['root-namespace'] ? { rootNamespace: values['root-namespace'] } : {}),
      ...(values['cluster-id'] ? { clusterId: values['cluster-id'] } : {}),
    };

    if (values.check) {
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

    const stateDir = values['state-dir'] ?? join(process.env.NODEMESH_STATE_DIR ?? '/run/nodemesh', 'control-plane');
    const cp = await ControlPlane.start({
      configDir: resolve(dir),
      stateDir: resolve(stateDir),
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
        `  config:      ${resolve(dir)} (${problems.errors} error(s), ${problems.warnings} warning(s); see /debug/config-errors)`,
        `  token:       ${cp.paths.token}`,
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

export const controlPlaneCommands: Command[] = [controlPlaneCommand];
