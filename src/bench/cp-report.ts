// The control-plane benchmark's report: the markdown section of docs/benchmarks.md written
// from the measured runs (propagation, debounce variants, bytes per client, memory; then the
// Kubernetes source beside the directory's, cp-report-kube.ts).
import { spawnSync } from 'node:child_process';
import { availableParallelism, cpus, release, totalmem } from 'node:os';
import { TYPE_ADDRESS, TYPE_AUTHORIZATION } from '../xds/index.js';
import { NAMESPACES, NODES, PODS_PER_NAMESPACE, SERVICES_PER_NAMESPACE, type BenchConfig } from './cp-config.js';
import { f0, f1, kb, list, mb, rawChanges, summarize } from './cp-format.js';
import type { KubeRun } from './cp-kube.js';
import { kubeSection } from './cp-report-kube.js';
import { DEFAULT_DEBOUNCE_MS, DEFAULT_RESCAN_MS, max, min, type ChangeResult, type CpRun } from './cp-runner.js';
import type { CpSettings } from './cp-settings.js';
import { sectionMarkers } from './sections.js';
import { median } from './tools.js';

/** The section of docs/benchmarks.md this benchmark owns. */
export const SECTION = 'controlplane';
export const { start: SECTION_START, end: SECTION_END } = sectionMarkers(SECTION);

function machine(): string {
  const nproc = spawnSync('nproc', [], { encoding: 'utf8' }).stdout.trim() || String(availableParallelism());
  return `${nproc} CPUs (nproc; ${cpus()[0]?.model.trim() ?? 'unknown CPU'}), ${f0(totalmem() / 2 ** 30)} GiB RAM shared with other work, kernel ${release()}, Node ${process.versions.node}`;
}

export function report(cfg: BenchConfig, settings: CpSettings, main: CpRun, compare: CpRun | undefined, kube: KubeRun | undefined, totalS: number, loadAtEnd: number): string {
  const started = (r: CpRun | undefined, what: string): string[] => (r ? [`${f1(r.loadAvg)} when the ${what} run started`] : []);
  const loads = [...started(main, 'config directory'), ...started(kube, 'Kubernetes API'), ...started(compare, 'debounce variant')].join(', ');
  const rows = main.rounds.map((r) => {
    const s = summarize(r.changes);
    return `| ${r.n} | **${f0(s.p50)}** | **${f0(s.max)}** | ${f0(s.toRescan)} | ${f0(s.rescan)} | ${f0(s.deliver)} | ${f0(median(r.spawnToReady))} / ${f0(max(r.spawnToReady))} | ${f0(median(r.startToReady))} / ${f0(max(r.startToReady))} |`;
  });
  const base = summarize(main.rounds[0]!.changes);
  const big = main.rounds[main.rounds.length - 1]!;
  const bigS = summarize(big.changes);
  const deltaBytes = median(main.rounds.flatMap((r) => r.changes.flatMap((c) => c.bytes)));
  const deltaRead = median(main.rounds.flatMap((r) => r.changes.flatMap((c) => c.readBytes)));
  const addr = big.sync.find((s) => s.typeUrl === TYPE_ADDRESS);
  const auth = big.sync.find((s) => s.typeUrl === TYPE_AUTHORIZATION);
  const syncBytes = median(big.syncBytes);
  const syncRead = median(big.syncReadBytes);
  const agentRss = big.agentMem.map((m) => m.rss);
  const agentHeap = big.agentMem.map((m) => m.heapUsed);
  // A rescan that starts later than the debounce plus slack was the periodic one: fs.watch missed the write.
  // (A rescan that started before the write is the periodic one too, already running when the file changed.)
  const watched = (cs: ChangeResult[], debounceMs: number) => cs.filter((c) => c.toRescanMs >= 0 && c.toRescanMs < debounceMs + 50).length;
  const variant = (label: string, cs: ChangeResult[], debounceMs: number) => {
    const s = summarize(cs);
    const w = watched(cs, debounceMs);
    const note = w === cs.length ? `${w} of ${cs.length}` : `**${w} of ${cs.length}**; the others waited for the ${DEFAULT_RESCAN_MS / 1000} s periodic rescan (worst p50 ${f0(max(cs.map((c) => c.p50)))} ms)`;
    return `| ${label} | ${f0(s.p50)} | ${f0(s.max)} | ${f0(s.toRescan)} | ${f0(s.rescan)} | ${f0(s.deliver)} | ${note} |`;
  };
  const variants = [variant(`default debounce (${DEFAULT_DEBOUNCE_MS} ms), file rewritten in place`, big.changes, DEFAULT_DEBOUNCE_MS)];
  if (compare) variants.push(variant(`debounce ${compare.debounceMs} ms (\`ControlPlaneOptions.debounceMs\`), in place`, compare.rounds[0]!.changes, compare.debounceMs));
  if (big.renames.length > 0) variants.push(variant(`default debounce, file replaced by rename (write \`.tmp\`, \`rename(2)\`)`, big.renames, DEFAULT_DEBOUNCE_MS));
  const syncResources = big.sync.reduce((n, x) => n + x.resources, 0);
  const share = (x: number) => `${f0((x / bigS.p50) * 100)} %`;
  const raw = rawChanges;
  const rawLines = [
    ...main.rounds.map((r) => raw(`N=${r.n}, in place`, r.changes)),
    ...(big.renames.length ? [raw(`N=${big.n}, rename`, big.renames)] : []),
    ...(compare ? compare.rounds.map((r) => raw(`N=${r.n}, debounce ${compare.debounceMs} ms, in place`, r.changes)) : []),
    ...main.rounds.map((r) => `- N=${r.n} spawn → ready ms: ${list(r.spawnToReady)}`),
    `- delta push DeltaDiscoveryResponse bytes (all clients, all changes): ${[...new Set(main.rounds.flatMap((r) => r.changes.flatMap((c) => c.bytes)))].sort((a, b) => a - b).join(', ')}; TLS bytes read per client per change: min ${f0(min(main.rounds.flatMap((r) => r.changes.flatMap((c) => c.readBytes))))}, max ${f0(max(main.rounds.flatMap((r) => r.changes.flatMap((c) => c.readBytes))))}`,
    `- control plane memory MiB, idle / ${big.n} clients: RSS ${mb(main.idle.rss)} / ${mb(big.cpWithClients?.rss ?? NaN)}, heap total ${mb(main.idle.heapTotal)} / ${mb(big.cpWithClients?.heapTotal ?? NaN)}, external ${mb(main.idle.external)} / ${mb(big.cpWithClients?.external ?? NaN)}, array buffers ${mb(main.idle.arrayBuffers)} / ${mb(big.cpWithClients?.arrayBuffers ?? NaN)}; started in ${f0(main.startupMs)} ms`,
    ...main.rounds.map((r) => `- N=${r.n}: control plane CPU for the initial syncs ${f0(r.cpSyncCpuMs)} ms; spawn → \`start()\` p50 ${f0(median(r.spawnToStart))} ms`),
    `- N=${big.n} client RSS MiB: ${list(agentRss.map((x) => x / (1 << 20)), f1)}`,
  ];
  return `## Control plane: policy propagation, bytes per push, memory (config directory and Kubernetes API)

Command: \`make bench\` (\`node dist/bench/controlplane.js\`; config directory: N = ${settings.clients.join(', ')} clients; ${kube ? `Kubernetes API: ${kube.rounds[0]!.n} agents; ` : ''}${settings.changes} policy changes per round, medians).
Machine: ${machine()}. Measured ${new Date().toISOString().slice(0, 10)}; the whole run took ${f0(totalS)} s. The machine is shared with other
work: its 1-minute load average was ${loads} and ${f1(loadAtEnd)} at the end.

**Mesh:** ${cfg.pods.toLocaleString('en')} workloads (Pods with \`status.podIP\`, ${NAMESPACES} ambient namespaces × ${PODS_PER_NAMESPACE}, spread over ${NODES} nodes),
${cfg.services} Services (each selecting ${PODS_PER_NAMESPACE / SERVICES_PER_NAMESPACE} pods), ${cfg.policies.total} AuthorizationPolicies (${cfg.policies.allow} ALLOW, ${cfg.policies.deny} DENY;
${cfg.policies.global} GLOBAL, ${cfg.policies.namespace} NAMESPACE, ${cfg.policies.selector} WORKLOAD_SELECTOR; principals, namespaces, service accounts, IP blocks, ports,
\`when\`), one file per policy. Served: ${main.addresses.toLocaleString('en')} Address and ${main.authorizations} Authorization resources (the ${cfg.policies.total}
policies and \`istio-system/istio_converted_static_strict\`, always served).

**How:** the control plane is its own process running \`ControlPlane.start\` (what \`nodemesh control-plane\`
runs; TLS, token, 127.0.0.1 port 0). Each client is its own Node process (\`src/bench/xds-agent.ts\`): the real
\`XdsClient\` + \`ProxyState\` over TLS with the token and root from the control plane's state dir, one node name
each. A change rewrites one AuthorizationPolicy file (a new principal, so exactly one Authorization changes).
Latency is from just before the write until each client's \`ProxyState\` emits the new revision
(\`process.hrtime\`, CLOCK_MONOTONIC, the same clock in every process). The control plane's debounce is part of
the figure: \`ConfigSource\` waits for ${DEFAULT_DEBOUNCE_MS} ms of quiet after an \`fs.watch\` event and also rescans every
${DEFAULT_RESCAN_MS / 1000} s (\`ControlPlaneOptions.debounceMs\` / \`rescanMs\`; the CLI sets neither, so these defaults are what
operators get).

### Propagation: file write → applied in every client (ms)

| clients | p50 across clients | max across clients | write → rescan starts (debounce) | rescan: parse, translate, queue pushes | queued → last client applied | client spawn → synced p50 / max | \`XdsClient.start()\` → synced p50 / max |
|---|---|---|---|---|---|---|---|
${rows.join('\n')}

Ratio N=${big.n} / N=1: p50 **${(bigS.p50 / base.p50).toFixed(2)}×**, max **${(bigS.max / base.max).toFixed(2)}×**. The rescan column is the
control plane recomputing everything (all ${main.addresses.toLocaleString('en')} addresses re-translated, re-encoded and re-hashed
to find the one Authorization that changed), median CPU ${f0(median(main.rounds.flatMap((r) => r.changes.map((c) => c.cpuMs))))} ms.
At N=${big.n} the p50 of ${f0(bigS.p50)} ms is the debounce (${f0(bigS.toRescan)} ms, ${share(bigS.toRescan)}), the recompute (${f0(bigS.rescan)} ms,
${share(bigS.rescan)}) and delivery to the slowest client (${f0(bigS.deliver)} ms; ${big.n} processes on ${availableParallelism()} CPUs wake, decrypt, decode, apply).

Initial sync: ${big.n} clients started at once were synced ${f0(median(big.startToReady))} ms (p50) after \`XdsClient.start()\`; before that,
${f0(median(big.spawnToStart))} ms (p50) went to ${big.n} Node processes booting on ${availableParallelism()} CPUs (an artefact of running every client on one
machine). The control plane spent ${f0(big.cpSyncCpuMs)} ms of CPU serving those ${big.n} syncs (${f0(big.cpSyncCpuMs / big.n)} ms each: the
${syncResources}-resource response is encoded again for every stream).

### Debounce and how the file is written (N=${big.n}, ms)

| variant | p50 | max | write → rescan | rescan | queued → last applied | rescans started within debounce + 50 ms |
|---|---|---|---|---|---|---|
${variants.join('\n')}

A rescan that starts more than 50 ms after the debounce is the periodic one (every ${DEFAULT_RESCAN_MS / 1000} s): \`fs.watch\` did not report the write.
With a file replaced by rename, Node ${process.versions.node}'s recursive \`fs.watch\` on Linux (one inotify watch per file,
set up by path but bound to the inode) keeps watching the replaced inode and does not watch the new one, so whether
a write is seen depends on races with the temporary file; the others wait for the periodic rescan.

### Bytes per client

Measured in each client by wrapping the \`responseDeserialize\` that \`XdsClient\` gives grpc-js: the length of
each encoded \`DeltaDiscoveryResponse\` (the gRPC message; add 5 B of gRPC prefix, 9 B per HTTP/2 frame of up to
16 KiB, ~22 B per TLS record). Cross-check: bytes the client process read from its socket (\`rchar\` of
\`/proc/<pid>/io\`), which includes TLS, HTTP/2 and keepalive.

| | DeltaDiscoveryResponse | resources | TLS bytes read |
|---|---|---|---|
| initial sync: Address | ${kb(addr?.bytes ?? NaN)} | ${addr?.resources ?? 'n/a'} | |
| initial sync: Authorization | ${kb(auth?.bytes ?? NaN)} | ${auth?.resources ?? 'n/a'} | |
| initial sync, total | **${kb(syncBytes)}** | ${(addr?.resources ?? 0) + (auth?.resources ?? 0)} | ${kb(syncRead)} |
| one policy change (delta push) | **${kb(deltaBytes)}** | 1 | ${kb(deltaRead)} |
| **delta / full sync** | **${((deltaBytes / syncBytes) * 100).toFixed(3)} %** (1 : ${f0(syncBytes / deltaBytes)}) | | |

### Memory (after a full GC)

| process | RSS MiB | V8 heap used MiB |
|---|---|---|
| control plane, idle (${cfg.pods.toLocaleString('en')} workloads, ${cfg.policies.total} policies, no client) | ${mb(main.idle.rss)} | ${mb(main.idle.heapUsed)} |
| control plane, ${big.cpWithClients?.streams ?? big.n} clients connected | ${mb(big.cpWithClients?.rss ?? NaN)} | ${mb(big.cpWithClients?.heapUsed ?? NaN)} |
| → per connected client | ${f1((big.cpWithClients!.rss - main.idle.rss) / big.n / 1024)} KiB | ${f1((big.cpWithClients!.heapUsed - main.idle.heapUsed) / big.n / 1024)} KiB |
| one client process before \`XdsClient.start()\` (Node, modules, .proto files; p50) | ${mb(median(big.rssBeforeStart))} | |
| one client process after sync (p50 / max of ${big.n}) | ${mb(median(agentRss))} / ${mb(max(agentRss))} | ${mb(median(agentHeap))} / ${mb(max(agentHeap))} |
| its xDS state (heap after sync − heap before \`start()\`, p50) | | ${mb(median(big.stateHeap))} |

Raw numbers (ms unless noted; one value per change):
${rawLines.join('\n')}
${kube ? `\n${kubeSection(cfg, settings, main, kube)}` : ''}`;
}
