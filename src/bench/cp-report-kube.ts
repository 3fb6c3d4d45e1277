// The control-plane benchmark's Kubernetes part of the report: initial sync, policy change →
// every agent applied, and memory with the Kubernetes source, beside the directory source's
// figures from the same run, with kube/dir ratios.
import { NAMESPACES, type BenchConfig } from './cp-config.js';
import { f0, f1, kb, list, mb, ratio, rawChanges, summarize, type Summary } from './cp-format.js';
import { WRITERS, type KubeRun } from './cp-kube.js';
import { DEFAULT_DEBOUNCE_MS, KUBE_DEBOUNCE_MS, max, type CpRun, type Round } from './cp-runner.js';
import type { CpSettings } from './cp-settings.js';
import { median } from './tools.js';

/** The directory round to set beside the Kubernetes one: the same N, else the largest. */
export function matchingRound(dir: CpRun, n: number): Round {
  return dir.rounds.find((r) => r.n === n) ?? dir.rounds[dir.rounds.length - 1]!;
}

const signedMb = (bytes: number): string => `${bytes >= 0 ? '+' : '−'}${mb(Math.abs(bytes))}`;
const pm = (xs: number[]): string => `${f0(median(xs))} / ${f0(max(xs))}`;
const perClient = (run: CpRun, r: Round, k: 'rss' | 'heapUsed'): number => (r.cpWithClients ? (r.cpWithClients[k] - run.idle[k]) / r.n : NaN);

/** What makes the two p50s differ, from the measured parts (either way round). */
function changeProse(ds: Summary, ks: Summary): string {
  const wait = ds.toRescan - ks.toRescan;
  return (
    `The API path's p50 is ${ratio(ks.p50, ds.p50)} the directory's (${f0(ks.p50)} against ${f0(ds.p50)} ms). The wait before the recompute is ` +
    `${f0(Math.abs(wait))} ms ${wait >= 0 ? 'shorter' : 'longer'} on the API: the directory source waits for ${DEFAULT_DEBOUNCE_MS} ms of quiet after an \`fs.watch\` ` +
    `event (${f0(ds.toRescan)} ms from the write here), the Kubernetes source ${KUBE_DEBOUNCE_MS} ms after a watch event (${f0(ks.toRescan)} ms: the event's ` +
    `arrival, the debounce and folding the snapshot). The recompute (${f0(ds.rescan)} against ${f0(ks.rescan)} ms, CPU ${f0(ds.cpu)} against ${f0(ks.cpu)} ms) and ` +
    `delivery (${f0(ds.deliver)} against ${f0(ks.deliver)} ms) are the same work from either source; their wall time varies from change to change on a shared machine.`
  );
}

/** Where the agents' initial sync time goes, and what the source adds to it. */
function syncProse(n: number, d: Round, k: Round): string {
  const boot = median(d.spawnToStart);
  const kboot = median(k.spawnToStart);
  const req = k.apiSyncRequests;
  const asked = req ? `${req.tokenReviews} TokenReviews and ${req.nodeReads} Node reads${req.other ? ` (and ${req.other} other requests)` : ''}` : 'a TokenReview and a Node read per agent';
  const conns = req ? `, on ${req.connections} new connections${req.connections >= req.tokenReviews + req.nodeReads ? ' (a TLS handshake for every request: its API client reused none)' : ''}` : '';
  return (
    `Agent spawn → synced is dominated by ${n} Node processes booting at once on the machine's CPUs (spawn → \`XdsClient.start()\` p50 ${f0(boot)} ms ` +
    `for the directory round, ${f0(kboot)} ms for the Kubernetes one), so those rows say more about the machine's load at the two moments than about the ` +
    `sources. What the source adds is in the control plane: on the API it asked ${asked} while the ${n} agents connected${conns}, and spent ` +
    `${ratio(k.cpSyncCpuMs, d.cpSyncCpuMs)} the CPU of checking HMAC node tokens on the same number of syncs (${f0(k.cpSyncCpuMs)} against ${f0(d.cpSyncCpuMs)} ms). ` +
    `Each agent's first sync waits for those two round trips; a TokenReview's answer is then cached for 2 min.`
  );
}

export function kubeSection(cfg: BenchConfig, settings: CpSettings, dir: CpRun, kube: KubeRun): string {
  const k = kube.rounds[0]!;
  const d = matchingRound(dir, k.n);
  const dN = d.n === k.n ? `N=${d.n}` : `N=${d.n}; no round of ${k.n}`;
  const ks = summarize(k.changes);
  const ds = summarize(d.changes);
  const row = (label: string, dv: number, kv: number, f = f0) => `| ${label} | ${f(dv)} | ${f(kv)} | ${ratio(kv, dv)} |`;
  const rowPm = (label: string, dv: number[], kv: number[]) => `| ${label} | ${pm(dv)} | ${pm(kv)} | ${ratio(median(kv), median(dv))} / ${ratio(max(kv), max(dv))} |`;
  const dMem = d.cpWithClients;
  const kMem = k.cpWithClients;
  const memRow = (label: string, dv: { rss: number; heapUsed: number } | undefined, kv: { rss: number; heapUsed: number } | undefined) =>
    `| ${label} | ${mb(dv?.rss ?? NaN)} | ${mb(dv?.heapUsed ?? NaN)} | ${mb(kv?.rss ?? NaN)} | ${mb(kv?.heapUsed ?? NaN)} | ${ratio(kv?.rss ?? NaN, dv?.rss ?? NaN)} | ${ratio(kv?.heapUsed ?? NaN, dv?.heapUsed ?? NaN)} |`;
  const kib = (x: number) => `${f1(x / 1024)} KiB`;
  const listToServe = kube.startToServeMs - kube.startToSyncedMs;
  const addrBytes = (r: Round) => median(r.syncBytes);
  return `### Kubernetes source: the same mesh through the API server (${k.n} agents)

**How:** the API server is the stand-in of \`test/helpers/kube-apiserver.ts\` (built to \`dist-test/\` by \`make build\` and run
as a process of its own, so its CPU is not counted as the control plane's). It stands in for kube-apiserver, which cannot
run on these machines: it speaks the real wire protocol over HTTPS (discovery, paged lists, watches with bookmarks,
status subresources, TokenRequest, TokenReview) but keeps everything in memory, with no etcd, admission, RBAC or
conversion, so its cost per request is not a real apiserver's; what this part measures is the control plane's side.
The benchmark creates the same ${cfg.pods.toLocaleString('en')} Pods, ${cfg.services} Services, ${cfg.policies.total} AuthorizationPolicies and ${NAMESPACES + 1} Namespaces through it with
@kubernetes/client-node, as \`kubectl create -f\` would (${kube.populated.objects.toLocaleString('en')} objects with the Nodes, ${kube.populated.requests.toLocaleString('en')} requests, ${WRITERS} at a time, in ${f1(kube.populated.ms / 1000)} s; the client library opens a TLS connection per request),
and writes each Pod's status (phase Running, its IP, Ready) through the status subresource as kubelet would. For each
of ${k.n} nodes it then creates an agent Pod as the DaemonSet's (hostNetwork, bound to the node, ServiceAccount
\`nodemesh-system/nodemesh-agent\`) and gets its token from the TokenRequest API (audience \`nodemesh\`, bound to the pod;
${f0(kube.credentialsMs)} ms for all). Each agent presents that token; the control plane checks it with a TokenReview and takes
the node from the pod. The control plane runs \`ControlPlane.start({ kubernetes: { kubeconfig } })\`, what
\`nodemesh control-plane --kubeconfig\` runs, with its defaults: informers over every kind with 500-item pages, a
${KUBE_DEBOUNCE_MS} ms debounce of watch events, policy status written back. It serves ${kube.addresses.toLocaleString('en')} Address resources (the directory's
${dir.addresses.toLocaleString('en')}, byte for byte the same, plus the API server's own \`default/kubernetes\` Service and its endpoint, which every
cluster has) and the same ${kube.authorizations} Authorization resources. A change is an update (PUT) of the probe AuthorizationPolicy with a new
principal, its resourceVersion read first; latency runs from just before the PUT until each agent's \`ProxyState\` holds
the revision. Directory figures are the same run's (${dN}).

#### Initial sync (ms)

| stage | config directory | Kubernetes API | kube / dir |
|---|---|---|---|
${row('control-plane process spawn → `ControlPlane.start()` called (Node and modules loading)', dir.bootMs, kube.bootMs)}
| \`start()\` → informers synced (discovery, every kind listed once; includes loading @kubernetes/client-node) | | ${f0(kube.startToSyncedMs)} | |
${row('`start()` → serving (directory: read, parse; both: translate, CA, serving certificate, listeners)', dir.startToServeMs, kube.startToServeMs)}
${row(`${k.n} agents spawned at once → the first synced`, d.firstSyncedMs, k.firstSyncedMs)}
${rowPm('agent spawn → synced, p50 / max', d.spawnToReady, k.spawnToReady)}
${rowPm('`XdsClient.start()` → synced, p50 / max', d.startToReady, k.startToReady)}
${row(`control plane CPU serving the ${k.n} initial syncs`, d.cpSyncCpuMs, k.cpSyncCpuMs)}
| API requests over those syncs (TokenReviews / Node reads / other), and the connections they came on | | ${k.apiSyncRequests ? `${k.apiSyncRequests.tokenReviews} / ${k.apiSyncRequests.nodeReads} / ${k.apiSyncRequests.other}, ${k.apiSyncRequests.connections}` : 'n/a'} | |
| stand-in CPU over those syncs | | ${f0(k.apiSyncCpuMs)} | |
${row('initial sync per agent, DeltaDiscoveryResponse bytes (p50)', addrBytes(d), addrBytes(k), kb)}

On the API the control plane serves nothing before every informer has listed once (\`openSource\`: an empty snapshot
would withdraw everything from early agents): ${f0(kube.startToSyncedMs)} ms after \`start()\`, then ${f0(listToServe)} ms to translate and listen.
From the directory, reading and parsing its ${1 + NAMESPACES + cfg.policies.total} files and the same steps after took ${f0(dir.startToServeMs)} ms.
${syncProse(k.n, d, k)}

#### Policy change → all ${k.n} agents applied (ms, medians of ${settings.changes} changes)

| | config directory: file rewritten in place | Kubernetes API: update through the API | kube / dir |
|---|---|---|---|
${row('**p50 across agents**', ds.p50, ks.p50)}
${row('**max across agents**', ds.max, ks.max)}
${row('the write (writeFile returned; the API answered the PUT)', ds.write, ks.write, f1)}
${row(`write → recompute starts (directory: fs.watch + ${DEFAULT_DEBOUNCE_MS} ms debounce; API: watch event + ${KUBE_DEBOUNCE_MS} ms debounce + snapshot)`, ds.toRescan, ks.toRescan)}
${row('recompute: (directory: parse,) translate, hash, queue pushes', ds.rescan, ks.rescan)}
${row('control-plane CPU in the recompute', ds.cpu, ks.cpu)}
${row('queued → last agent applied', ds.deliver, ks.deliver)}
| stand-in CPU per change (the GET and PUT, watch events, the status write-back) | | ${f1(median(k.changes.map((c) => c.apiCpuMs)))} | |

${changeProse(ds, ks)} Both recompute the whole mesh with the same translation of the same objects; the
directory's recompute also re-reads and parses the changed file, while on the API the objects arrive parsed and are
validated one by one as watch events come. The control plane then writes the policy's status (\`ZtunnelAccepted\` for
the new generation) back through the API; that write, sent once the pushes are queued, and its watch echo change no
xDS resource.

#### Memory (after a full GC, MiB)

| process | directory RSS | directory heap used | Kubernetes RSS | Kubernetes heap used | kube / dir RSS | kube / dir heap |
|---|---|---|---|---|---|---|
${memRow(`control plane, idle (${cfg.pods.toLocaleString('en')} workloads, ${cfg.policies.total} policies, no client)`, dir.idle, kube.idle)}
${memRow(`control plane, ${k.n} clients connected (directory: ${d.cpWithClients ? `N=${d.n}` : 'not measured at this N'})`, dMem, kMem)}
| → per connected client | ${kib(perClient(dir, d, 'rss'))} | ${kib(perClient(dir, d, 'heapUsed'))} | ${kib(perClient(kube, k, 'rss'))} | ${kib(perClient(kube, k, 'heapUsed'))} | | |
| stand-in kube-apiserver holding the objects (not the control plane's; after creating them; RSS at the end ${mb(kube.standIn.rssEnd)}) | | | ${mb(kube.standIn.rss)} | ${mb(kube.standIn.heapUsed)} | | |

Idle, the control plane on the API holds ${signedMb(kube.idle.rss - dir.idle.rss)} MiB of RSS and ${signedMb(kube.idle.heapUsed - dir.idle.heapUsed)} MiB of V8 heap against the directory's: the
Kubernetes source keeps each object as the API served it (the raw JSON, for status writes and relists) beside its
validated form, and it loads @kubernetes/client-node (${f0(kube.libLoadMs)} ms to import in the benchmark's own process). Per
connected client, the heap is what the control plane keeps for each stream; RSS also counts memory outside the V8 heap
(TLS and HTTP/2 buffers, the allocator's slack) and moves more from run to run.

Raw numbers, Kubernetes source (ms unless noted; one value per change):
${rawChanges(`N=${k.n}, API update`, k.changes)}
- stand-in CPU per change ms: ${list(k.changes.map((c) => c.apiCpuMs), f1)}
- N=${k.n} spawn → ready ms: ${list(k.spawnToReady)}
- control plane: spawn → serving ${f0(kube.startupMs)} ms; memory MiB idle / ${k.n} clients: RSS ${mb(kube.idle.rss)} / ${mb(kMem?.rss ?? NaN)}, heap total ${mb(kube.idle.heapTotal)} / ${mb(kMem?.heapTotal ?? NaN)}, external ${mb(kube.idle.external)} / ${mb(kMem?.external ?? NaN)}, array buffers ${mb(kube.idle.arrayBuffers)} / ${mb(kMem?.arrayBuffers ?? NaN)}
- stand-in: spawn → serving ${f0(kube.standIn.startMs)} ms; CPU creating the objects ${f0(kube.standIn.populateCpuMs)} ms
- N=${k.n} client RSS MiB: ${list(k.agentMem.map((m) => m.rss / (1 << 20)), f1)}
`;
}
