// `nodemesh demo`: brings up the example pods with the agent, drives real client traffic
// (curl, redis-cli) from inside pods, prints what the proxy captured, and tears down.
import { cpSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { PORTS, stateDir } from '../net/index.js';
import { loadConfigDirStrict, type Pod } from '../k8s/index.js';
import { listPods } from '../sim/index.js';
import type { FlowRecord } from '../telemetry/index.js';
import { parse, usageError, type Command } from './command.js';
import { printCapture, startCapture } from './demo-capture.js';
import { demoMultiNode } from './demo-multinode.js';
import { simExec } from './pod-exec.js';
import { ADMIN, down, getJson, httpGet, printTable, up } from '../cluster/index.js';

/** Label that marks the pods the demo drives traffic from. */
export const DEMO_ROLE_LABEL = 'nodemesh.io/demo-role';

interface Probe {
  from: string;
  to: string;
  target: string;
  tool: string;
  argv: string[];
}

/** A real client for each declared container port, chosen by the port's name. */
function probesFor(client: string, server: Pod, ip: string): Probe[] {
  const out: Probe[] = [];
  for (const c of server.spec.containers) {
    for (const p of c.ports) {
      const target = `${ip}:${p.containerPort}`;
      const to = `${server.metadata.namespace}/${server.metadata.name}`;
      if (p.name?.startsWith('redis')) {
        out.push({ from: client, to, target, tool: 'redis-cli', argv: ['redis-cli', '-h', ip, '-p', String(p.containerPort), 'INCR', 'demo:hits'] });
      } else if (p.name?.startsWith('http')) {
        out.push({ from: client, to, target, tool: 'curl', argv: ['curl', '-sS', '-m', '5', '-o', '/dev/null', '-w', 'HTTP %{http_code}, %{size_download} bytes', `http://${target}/`] });
      }
    }
  }
  return out;
}

const DENY_POLICY = `# Added by the demo: deny the client's identity on the web pods.
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: deny-demo-client, namespace: demo }
spec:
  selector: { matchLabels: { app: web } }
  action: DENY
  rules:
  - from: [{ source: { principals: ["cluster.local/ns/demo/sa/client"] } }]
`;

interface Dump {
  pods: { namespace: string; name: string }[];
  workloads: { namespace: string; name: string; addresses: string[]; tunnelProtocol: string; identity: string }[];
  services?: { hostname: string; vips: { address: string }[] }[];
  policies?: { namespace: string; name: string; action: string }[];
  certificates?: { identity: string; state: string; notAfter?: string }[];
}

async function waitFor(what: string, pred: () => Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const t0 = Date.now();
  while (Date.now() - t0 < timeoutMs) {
    if (await pred()) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
}

function showControlPlaneView(d: Dump): void {
  process.stdout.write('\nWhat the agent received from the control plane (GET 127.0.0.1:15000/config_dump):\n');
  printTable(['WORKLOAD', 'IP', 'TUNNEL', 'IDENTITY'], d.workloads.map((w) => [`${w.namespace}/${w.name}`, w.addresses.join(','), w.tunnelProtocol, w.identity]));
  process.stdout.write('\n');
  printTable(['SERVICE', 'VIP'], (d.services ?? []).map((s) => [s.hostname, s.vips.map((v) => v.address).join(',')]));
  process.stdout.write('\n');
  printTable(['CERTIFICATE (SAN)', 'STATE', 'EXPIRES'], (d.certificates ?? []).map((c) => [c.identity, c.state, c.notAfter ?? '-']));
}

/** Adds a DENY policy to the watched directory, shows it enforced, then removes it. */
async function policyChange(dir: string, sd: string, ipOf: Map<string, string>): Promise<number> {
  const web = ipOf.get('demo/web');
  const redis = ipOf.get('demo/redis');
  if (!web || !redis) return 0;
  const curl = (from: string) => simExec(from, ['curl', '-sS', '-m', '5', '-o', '/dev/null', '-w', 'HTTP %{http_code}', `http://${web}:8080/`], sd);
  const file = join(dir, 'zz-demo-deny.yaml');
  process.stdout.write(`\nPolicy change: writing ${file}\n  (AuthorizationPolicy demo/deny-demo-client: DENY principal cluster.local/ns/demo/sa/client on app=web)\n`);
  const t0 = Date.now();
  writeFileSync(file, DENY_POLICY);
  const hasPolicy = async () => ((await getJson<Dump>(`${ADMIN}/config_dump`)).policies ?? []).some((p) => p.name === 'deny-demo-client');
  await waitFor('the agent to receive the policy', hasPolicy);
  process.stdout.write(`  the agent had it ${Date.now() - t0} ms after the write (control plane watch + delta xDS push)\n\n`);
  let failures = 0;
  const rows: string[][] = [];
  // On web's HTTP port the destination's proxy decides each request: a denial is Envoy's 403.
  const check = (from: string, to: string, r: { code: number; out: string }, expectOk: boolean) => {
    const allowed = r.code === 0 && !r.out.startsWith('HTTP 403');
    const ok = allowed === expectOk;
    if (!ok) failures++;
    rows.push([from, to, r.code === 0 ? (r.out.startsWith('HTTP 403') ? `${r.out} (RBAC: access denied)` : r.out) : `refused (exit ${r.code}: connection reset)`, expectOk ? 'allowed' : 'denied', ok ? 'as expected' : 'UNEXPECTED']);
  };
  check('demo/client', 'demo/web', curl('demo/client'), false);
  check('legacy/legacy-client', 'demo/web', curl('legacy/legacy-client'), true);
  check('demo/client', 'demo/redis', simExec('demo/client', ['redis-cli', '-h', redis, 'PING'], sd), true);
  printTable(['FROM', 'TO', 'RESULT', 'POLICY SAYS', ''], rows);
  rmSync(file);
  await waitFor('the agent to drop the policy', async () => !(await hasPolicy()));
  const again = curl('demo/client');
  process.stdout.write(`\nPolicy file removed: demo/client → demo/web is ${again.code === 0 ? `allowed again (${again.out})` : 'STILL REFUSED'}\n`);
  return failures + (again.code === 0 ? 0 : 1);
}

export async function demo(dirArg: string, sd: string): Promise<number> {
  if (loadConfigDirStrict(resolve(dirArg)).pods.some((p) => p.spec.nodeName !== undefined)) return demoMultiNode(dirArg, sd);
  // The control plane watches the directory and the demo edits it: work on a copy.
  const dir = mkdtempSync(join(tmpdir(), 'nodemesh-demo-'));
  cpSync(resolve(dirArg), dir, { recursive: true });
  const cfg = loadConfigDirStrict(dir);
  process.stdout.write(`nodemesh demo: the pods of ${dirArg} (copied to ${dir}), a control plane and a node agent\nas separate processes, real CNI plugins and eBPF capture.\n\n`);
  await up(dir, sd);
  let failures = 0;
  try {
    const pods = await listPods({ stateDir: sd });
    const ipOf = new Map(pods.map((p) => [`${p.namespace}/${p.name}`, p.ip]));
    const dump = await getJson<Dump>(`${ADMIN}/config_dump`);
    const enrolled = new Set(dump.pods.map((p) => `${p.namespace}/${p.name}`));
    const clients = cfg.pods.filter((p) => p.metadata.labels[DEMO_ROLE_LABEL] === 'client');
    const servers = cfg.pods.filter((p) => p.metadata.labels[DEMO_ROLE_LABEL] !== 'client');
    const probes: Probe[] = [];
    for (const c of clients) {
      for (const s of servers) {
        const ip = ipOf.get(`${s.metadata.namespace}/${s.metadata.name}`);
        if (ip) probes.push(...probesFor(`${c.metadata.namespace}/${c.metadata.name}`, s, ip));
      }
    }
    process.stdout.write(`\nDriving traffic: ${probes.length} connections with curl and redis-cli from inside the client pods.\n`);
    const results = probes.map((p) => ({ p, r: simExec(p.from, p.argv, sd) }));
    await new Promise((r) => setTimeout(r, 300)); // let the last access records close
    const flows = await getJson<FlowRecord[]>(`${ADMIN}/debug/flows`);
    const rows: string[][] = [];
    for (const { p, r } of results) {
      const out = flows.filter((f) => f.direction === 'outbound' && f.pod === p.from && f.originalDst === p.target);
      const inn = flows.filter((f) => f.direction === 'inbound' && f.pod === p.to && f.originalDst === p.target);
      const f = out.at(-1) ?? inn.at(-1);
      // Outbound is captured for enrolled clients; inbound for enrolled servers.
      const ok = r.code === 0 && out.length > 0 === enrolled.has(p.from) && inn.length > 0 === enrolled.has(p.to);
      if (!ok) failures++;
      const ends = [out.length ? 'outbound' : '', inn.length ? 'inbound' : ''].filter(Boolean).join(' + ');
      rows.push([
        p.from,
        `${p.target} (${p.to})`,
        `${p.tool}: ${r.code === 0 ? r.out.split('\n')[0]!.slice(0, 28) : `exit ${r.code}`}`,
        ends || 'no (neither pod enrolled)',
        f ? `${f.bytesSent}/${f.bytesReceived}` : '-',
      ]);
    }
    process.stdout.write('\n');
    printTable(['FROM POD', 'ORIGINAL DESTINATION', 'CLIENT RESULT', 'CAPTURED BY PROXY', 'BYTES OUT/IN'], rows);
    process.stdout.write('\nCaptured outbound = the client pod is enrolled; inbound = the server pod is. Pods in namespace\n"legacy" are not enrolled, so their side of a connection goes direct.\n');
    const metrics = (await httpGet(`http://127.0.0.1:${PORTS.metrics}/metrics`)).body.split('\n').filter((l) => l.startsWith('istio_tcp_connections_opened_total'));
    process.stdout.write(`\nThe agent's Prometheus endpoint (:15020/metrics) has ${metrics.length} istio_tcp_connections_opened_total series, e.g.:\n  ${metrics[0] ?? '(none)'}\n`);
    showControlPlaneView(await getJson<Dump>(`${ADMIN}/config_dump`));
    const capture = await startCapture(sd, ['--namespace', 'demo']);
    failures += await policyChange(dir, sd, ipOf);
    const table = await capture.stop();
    printCapture(table);
    // The denied connection shows with its policy, and the allowed ones too.
    if (!table.some((l) => /denied/.test(l) && /deny-demo-client/.test(l)) || !table.some((l) => /allowed/.test(l))) {
      process.stdout.write('  UNEXPECTED: the capture did not show both an allowed and the denied connection\n');
      failures++;
    }
  } finally {
    process.stdout.write('\n');
    await down(sd);
    rmSync(dir, { recursive: true, force: true });
  }
  process.stdout.write(failures === 0 ? '\nDemo complete: every connection behaved as expected, and everything was torn down.\n' : `\nDemo finished with ${failures} unexpected result(s).\n`);
  return failures === 0 ? 0 : 1;
}

export const demoCommand: Command = {
  path: ['demo'],
  summary: 'run the end-to-end demo on simulated pods and tear it down',
  help: `Usage: nodemesh demo [<dir>] [--state-dir <dir>]

Copies <dir> (default examples/demo) to a temp dir, brings up its pods, the control plane
and the node agent, drives real traffic (curl to ports named http*, redis-cli to ports named
redis*) from every pod labelled ${DEMO_ROLE_LABEL}=client, prints which connections the proxy
captured with their bytes, shows the workloads, services and certificates the agent got from
the control plane, adds an AuthorizationPolicy that denies demo/client on demo/web and shows
it enforced (and lifted when removed) while \`nodemesh capture\` streams the connections with
their verdicts and policies, then removes everything. Needs root.

When the Pods of <dir> name nodes (examples/multinode), the demo runs two simulated nodes
instead, each with its own agent and the control plane on the cluster network, drives curl
and redis-cli across nodes and through a Service VIP, captures the cluster network to show
the traffic is HBONE (TLS on 15008) with no plaintext, and prints what each agent recorded.
`,
  async run(argv) {
    const { values, positionals } = parse(argv, { 'state-dir': { type: 'string' } });
    if (positionals.length > 1) throw usageError('expected at most one config directory');
    return demo(positionals[0] ?? 'examples/demo', stateDir(values['state-dir']));
  },
};
