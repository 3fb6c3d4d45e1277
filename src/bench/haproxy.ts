// The mesh benchmark's native reference for sidecar mode (issue 11): a sidecar mesh built from a
// proxy users would pick instead, standing in for Envoy or Linkerd sidecars. One Debian haproxy
// per pod, inside the pod's netns, `mode tcp`, one thread each, mutual TLS 1.3 between them:
//   client pod: listens on loopback on the server's own ports, dials the server pod's sidecar
//               with TLS (verify required, the client's certificate);
//   server pod: a TLS listener on the pod IP, each app port + TLS_PORT_OFFSET, that requires a
//               client certificate and forwards in plaintext to the app on 127.0.0.1.
// The pods are outside the mesh (no capture). A throwaway CA and two leaf certificates are made
// with openssl at run time; the processes (by PID) and the directory go at stop().
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { HTTP_PORT, IPERF_PORT, SOCKPERF_BASE, SOCKPERF_PORTS, type PathDef } from './pods.js';

export const HAPROXY_PATH: PathDef<'haproxy-sidecar'> = {
  name: 'haproxy-sidecar',
  label: 'haproxy sidecars (proxy per pod, mTLS)',
  client: 'plain/client',
  server: 'plain/remote',
  proxies: [],
  dial: '127.0.0.1',
};

/** The server sidecar listens on each app port + this; the client's backend adds it. */
export const TLS_PORT_OFFSET = 10000;
/** The app ports the sidecars carry, as [first, last]: iperf3, nginx, sockperf's ports. */
export const APP_PORTS: ReadonlyArray<readonly [number, number]> = [
  [IPERF_PORT, IPERF_PORT],
  [HTTP_PORT, HTTP_PORT],
  [SOCKPERF_BASE, SOCKPERF_BASE + SOCKPERF_PORTS - 1],
];

export interface SidecarSpec {
  /** Where the certificates are (`ca.pem`, `client.pem`, `server.pem`). */
  dir: string;
  /** The server pod's IP: where its sidecar's TLS listener is. */
  serverIp: string;
  /** The server certificate's DNS name, which the client sidecar verifies. */
  serverName: string;
  ports?: ReadonlyArray<readonly [number, number]>;
  /** Where the client sidecar listens in the client pod. */
  listen?: string;
}

const binds = (addr: string, ports: SidecarSpec['ports'], offset = 0): string =>
  (ports ?? APP_PORTS).map(([a, b]) => `${addr}:${a + offset}${b === a ? '' : `-${b + offset}`}`).join(',');

/** What both sidecars share: one thread, TLS 1.3 only, TCP, timeouts, and no `log` (nothing is logged). */
function common(ssl: string): string {
  return `global
  nbthread 1
  maxconn 4096
  ${ssl} ssl-min-ver TLSv1.3
defaults
  mode tcp
  timeout connect 5s
  timeout client 60s
  timeout server 60s
`;
}

/** The client pod's sidecar: plaintext in on loopback, mutual TLS out to the server's sidecar. */
export function clientSidecarConfig(s: SidecarSpec): string {
  const d = s.dir;
  return `# nodemesh bench: the client pod's haproxy sidecar
${common('ssl-default-server-options')}frontend app
  bind ${binds(s.listen ?? HAPROXY_PATH.dial!, s.ports)}
  default_backend mtls
backend mtls
  server peer ${s.serverIp}:+${TLS_PORT_OFFSET} ssl verify required ca-file ${d}/ca.pem crt ${d}/client.pem sni str(${s.serverName}) verifyhost ${s.serverName}
`;
}

/** The server pod's sidecar: mutual TLS in on the pod IP (a client certificate required), plaintext to the app on loopback. */
export function serverSidecarConfig(s: SidecarSpec): string {
  const d = s.dir;
  return `# nodemesh bench: the server pod's haproxy sidecar
${common('ssl-default-bind-options')}frontend mtls
  bind ${binds(s.serverIp, s.ports, TLS_PORT_OFFSET)} ssl crt ${d}/server.pem ca-file ${d}/ca.pem verify required
  default_backend app
backend app
  server app 127.0.0.1:-${TLS_PORT_OFFSET}
`;
}

function run(cmd: string, args: string[], cwd: string): string {
  const r = spawnSync(cmd, args, { cwd, encoding: 'utf8', timeout: 30_000 });
  if (r.error || r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${r.error?.message ?? `exit ${r.status}`}): ${r.stderr}`.slice(0, 2000));
  return r.stdout;
}

/**
 * A throwaway CA (ECDSA P-256, like the mesh's) and two leaf certificates signed by it, each
 * as haproxy's `crt` file (certificate then key): `client.pem` (SPIFFE ID of `client`) and
 * `server.pem` (DNS name `serverName`, SPIFFE ID of `server`). Also `ca.pem`.
 */
export function writeCerts(dir: string, serverName: string, ids: { client: string; server: string }): void {
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '2'];
  run('openssl', ['req', '-x509', ...ec, '-keyout', 'ca.key', '-out', 'ca.pem', '-subj', '/O=nodemesh bench/CN=haproxy sidecar CA'], dir);
  const leaf = (name: string, cn: string, san: string) => {
    run('openssl', ['req', '-x509', '-CA', 'ca.pem', '-CAkey', 'ca.key', ...ec, '-keyout', `${name}.key`, '-out', `${name}.crt`, '-subj', `/CN=${cn}`, '-addext', `subjectAltName=${san}`, '-addext', 'basicConstraints=critical,CA:FALSE', '-addext', 'extendedKeyUsage=serverAuth,clientAuth'], dir);
    writeFileSync(join(dir, `${name}.pem`), readFileSync(join(dir, `${name}.crt`), 'utf8') + readFileSync(join(dir, `${name}.key`), 'utf8'), { mode: 0o600 });
  };
  leaf('client', 'client', `URI:${ids.client}`);
  leaf('server', serverName, `DNS:${serverName},URI:${ids.server}`);
}

/** Why the haproxy path cannot run here (one line naming the Debian package), or undefined. */
export function haproxyMissing(): string | undefined {
  const probes: [string, string][] = [
    ['haproxy', '-v'],
    ['openssl', 'version'],
  ];
  const gone = probes.filter(([cmd, arg]) => spawnSync(cmd, [arg], { stdio: 'ignore' }).error).map(([cmd]) => cmd);
  return gone.length ? `haproxy sidecar path skipped: ${gone.join(' and ')} not installed (Debian package ${gone.join(', ')}: apt-get install -y ${gone.join(' ')}, or make apt-deps)` : undefined;
}

/** Runs a command inside a pod (BenchCluster.exec); its output. */
type PodExec = (pod: string, argv: string[]) => string;

/** The two sidecars of HAPROXY_PATH while they run: their PIDs, and their teardown. */
export class HaproxySidecars {
  readonly dir = mkdtempSync(join(tmpdir(), 'nm-bench-haproxy-'));
  readonly #pids = new Map<'client' | 'server', number>();

  /** Makes the certificates and configs and starts both daemons in their pods (listening once this returns). */
  start(exec: PodExec, serverIp: string): void {
    const [ns, name] = HAPROXY_PATH.server.split('/') as [string, string];
    const serverName = `${name}.${ns}.svc.cluster.local`;
    const spiffe = (pod: string) => `spiffe://cluster.local/ns/${pod.split('/')[0]}/sa/${pod.split('/')[1]}`;
    writeCerts(this.dir, serverName, { client: spiffe(HAPROXY_PATH.client), server: spiffe(HAPROXY_PATH.server) });
    const spec = { dir: this.dir, serverIp, serverName };
    // The server first, so the client's first connection finds it.
    for (const [side, pod, conf] of [
      ['server', HAPROXY_PATH.server, serverSidecarConfig(spec)],
      ['client', HAPROXY_PATH.client, clientSidecarConfig(spec)],
    ] as const) {
      const cfg = join(this.dir, `${side}.cfg`);
      const pidfile = join(this.dir, `${side}.pid`);
      writeFileSync(cfg, conf);
      // -D: the parent exits once the listeners are bound, after writing the daemon's PID.
      exec(pod, ['haproxy', '-D', '-p', pidfile, '-f', cfg]);
      const pid = Number(readFileSync(pidfile, 'utf8').trim());
      if (!Number.isInteger(pid) || pid <= 0) throw new Error(`haproxy in ${pod} wrote no PID to ${pidfile}`);
      this.#pids.set(side, pid);
    }
  }

  /** Both daemons' PIDs, client first (empty before start). */
  pids(): number[] {
    return (['client', 'server'] as const).flatMap((s) => (this.#pids.has(s) ? [this.#pids.get(s)!] : []));
  }

  /** By side, for the memory table. */
  pid(side: 'client' | 'server'): number | undefined {
    return this.#pids.get(side);
  }

  /** Kills the daemons (SIGTERM, then SIGKILL after 2 s) and removes the directory. Idempotent; never throws. */
  stop(): void {
    for (const pid of this.#pids.values()) {
      if (!isHaproxy(pid)) continue;
      signal(pid, 'SIGTERM');
      const until = Date.now() + 2000;
      while (isHaproxy(pid) && Date.now() < until) sleep(20);
      if (isHaproxy(pid)) signal(pid, 'SIGKILL');
    }
    this.#pids.clear();
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** Whether `pid` is still a live haproxy (not a reused PID, not a zombie). */
function isHaproxy(pid: number): boolean {
  const stat = `/proc/${pid}/stat`;
  if (!existsSync(stat)) return false;
  try {
    const s = readFileSync(stat, 'utf8');
    return s.includes('(haproxy)') && s.split(') ')[1]?.[0] !== 'Z';
  } catch {
    return false;
  }
}

function signal(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch {
    // Gone already.
  }
}

function sleep(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}
