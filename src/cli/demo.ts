// `nodemesh demo`: brings up the example pods with the agent, drives real client traffic
// (curl, redis-cli) from inside pods, prints what the proxy captured, and tears down.
import { spawnSync } from 'node:child_process';
import { resolve } from 'node:path';
import { stateDir } from '../agent/index.js';
import { loadConfigDirStrict, type Pod } from '../k8s/index.js';
import { listPods } from '../sim/index.js';
import type { FlowRecord } from '../telemetry/index.js';
import { parse, usageError, type Command } from './command.js';
import { cliPath } from './paths.js';
import { ADMIN, down, getJson, httpGet, printTable, up } from './up.js';

/** Label that marks the pods the demo drives traffic from. */
export const DEMO_ROLE_LABEL = 'nodemesh.io/demo-role';

interface Probe {
  from: string;
  to: string;
  target: string;
  tool: string;
  argv: string[];
}

function simExec(pod: string, argv: string[], sd: string): { code: number; out: string } {
  const r = spawnSync(cliPath, ['sim', 'exec', '--state-dir', sd, pod, '--', ...argv], { encoding: 'utf8', timeout: 30_000 });
  return { code: r.status ?? 1, out: `${r.stdout ?? ''}${r.stderr ?? ''}`.trim() };
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

export async function demo(dirArg: string, sd: string): Promise<number> {
  const dir = resolve(dirArg);
  const cfg = loadConfigDirStrict(dir);
  process.stdout.write(`nodemesh demo: pods from ${dirArg}, one node agent, real CNI plugins and eBPF capture.\n\n`);
  await up(dir, sd);
  let failures = 0;
  try {
    const pods = await listPods({ stateDir: sd });
    const ipOf = new Map(pods.map((p) => [`${p.namespace}/${p.name}`, p.ip]));
    const dump = await getJson<{ pods: { namespace: string; name: string }[] }>(`${ADMIN}/config_dump`);
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
    const metrics = (await httpGet('http://127.0.0.1:15020/metrics')).body.split('\n').filter((l) => l.startsWith('istio_tcp_connections_opened_total'));
    process.stdout.write(`\nThe agent's Prometheus endpoint (:15020/metrics) has ${metrics.length} istio_tcp_connections_opened_total series, e.g.:\n  ${metrics[0] ?? '(none)'}\n`);
  } finally {
    process.stdout.write('\n');
    await down(sd);
  }
  process.stdout.write(failures === 0 ? '\nDemo complete: every connection behaved as expected, and everything was torn down.\n' : `\nDemo finished with ${failures} unexpected result(s).\n`);
  return failures === 0 ? 0 : 1;
}

export const demoCommand: Command = {
  path: ['demo'],
  summary: 'run the end-to-end demo on simulated pods and tear it down',
  help: `Usage: nodemesh demo [<dir>] [--state-dir <dir>]

Brings up the pods of <dir> (default examples/demo) and the node agent, drives real traffic
(curl to ports named http*, redis-cli to ports named redis*) from every pod labelled
${DEMO_ROLE_LABEL}=client, prints which connections the proxy captured with their bytes,
then removes everything. Needs root.
`,
  async run(argv) {
    const { values, positionals } = parse(argv, { 'state-dir': { type: 'string' } });
    if (positionals.length > 1) throw usageError('expected at most one config directory');
    return demo(positionals[0] ?? 'examples/demo', stateDir(values['state-dir']));
  },
};
