// The control-plane benchmark's command line: what it measures (`--help`), `--quick`, which
// sources, and the environment overrides, parsed into one settings object the runner follows.
import { parseArgs } from 'node:util';

export const HELP = `Usage: node dist/bench/controlplane.js [options]   (part of make bench; needs no root)

Measures the control plane serving 1,000 workloads and 100 AuthorizationPolicies; the control
plane and every xDS client run as processes of their own (src/bench/xds-agent.ts):
  - the config-directory source: N = 1, 10, 50 clients with node tokens; 5 policy changes per N
    (one policy file rewritten in place; at the largest N also replaced by rename, and a second
    control plane with a 10 ms debounce);
  - the Kubernetes source: the same objects created through the stand-in kube-apiserver
    (test/helpers/kube-apiserver.ts, run from dist-test/ as a process of its own, so its CPU is
    not the control plane's; it stands in for kube-apiserver, its cost per request is not a real
    one's), the control plane started with --kubeconfig against it, 50 agents whose Pods are bound
    to the nodes as a DaemonSet's are, each authenticated by its pod's ServiceAccount token from
    the TokenRequest API; 5 policy changes, each an update of the AuthorizationPolicy through the API.
Reports initial sync, policy change -> applied in every client (p50/max), bytes per push and
memory (RSS, V8 heap after a GC), with kube/dir ratios, and writes the "controlplane" section of
docs/benchmarks.md.

Options:
  --quick      N = 1, 10 (directory), 10 agents (Kubernetes), 2 changes each, no rename or debounce
               variant; prints the section and does not write docs/benchmarks.md
  --no-kube    the directory source only; does not write docs/benchmarks.md
  --no-write   do not write docs/benchmarks.md
  -h, --help   this text

Environment (overrides the defaults and --quick's):
  NODEMESH_BENCH_CP_CLIENTS               directory-source client counts (1,10,50)
  NODEMESH_BENCH_CP_CHANGES               policy changes per round (5)
  NODEMESH_BENCH_CP_KUBE_AGENTS           agents against the Kubernetes source (50); 0 skips it
  NODEMESH_BENCH_CP_COMPARE_DEBOUNCE_MS   debounce of the comparison run (10); empty skips it
  NODEMESH_BENCH_CP_DEADLINE_S            the whole run's deadline, every child killed then (600)

Needs dist/ and dist-test/ (make build). Logs of every process stay in a temp dir when it fails.
`;

export interface CpSettings {
  /** Directory source: client counts, one round each. */
  clients: number[];
  /** Policy changes per round. */
  changes: number;
  /** A second directory run at the largest N with this debounce; undefined skips it. */
  compareDebounceMs: number | undefined;
  /** Directory source: the file also replaced by rename at the largest N. */
  rename: boolean;
  /** Agents against the Kubernetes source; 0 skips it. */
  kubeAgents: number;
  /** Write docs/benchmarks.md. */
  write: boolean;
  quick: boolean;
  deadlineMs: number;
}

type Env = Record<string, string | undefined>;

function count(v: string, what: string, min: number): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < min) throw new Error(`${what} must be an integer of at least ${min}, got ${JSON.stringify(v)}`);
  return n;
}

/** The settings for a command line and environment, `help`, or a usage error. */
export function parseSettings(argv: string[], env: Env = process.env): { help: true } | { error: string } | { settings: CpSettings } {
  try {
    const { values } = parseArgs({
      args: argv,
      options: { quick: { type: 'boolean' }, 'no-kube': { type: 'boolean' }, 'no-write': { type: 'boolean' }, help: { type: 'boolean', short: 'h' } },
      strict: true,
    });
    if (values.help) return { help: true };
    const quick = values.quick === true;
    const clientsText = env.NODEMESH_BENCH_CP_CLIENTS ?? (quick ? '1,10' : '1,10,50');
    const clients = clientsText.split(',').map((c) => count(c.trim(), 'NODEMESH_BENCH_CP_CLIENTS', 1));
    const debounce = env.NODEMESH_BENCH_CP_COMPARE_DEBOUNCE_MS ?? (quick ? '' : '10');
    const kubeAgents = values['no-kube'] ? 0 : count(env.NODEMESH_BENCH_CP_KUBE_AGENTS ?? (quick ? '10' : '50'), 'NODEMESH_BENCH_CP_KUBE_AGENTS', 0);
    return {
      settings: {
        clients,
        changes: count(env.NODEMESH_BENCH_CP_CHANGES ?? (quick ? '2' : '5'), 'NODEMESH_BENCH_CP_CHANGES', 1),
        compareDebounceMs: debounce === '' ? undefined : count(debounce, 'NODEMESH_BENCH_CP_COMPARE_DEBOUNCE_MS', 0),
        rename: !quick,
        kubeAgents,
        // A section without the Kubernetes figures would drop them from the docs: only the full run writes.
        write: !quick && !values['no-write'] && kubeAgents > 0,
        quick,
        deadlineMs: count(env.NODEMESH_BENCH_CP_DEADLINE_S ?? '600', 'NODEMESH_BENCH_CP_DEADLINE_S', 10) * 1000,
      },
    };
  } catch (err) {
    return { error: (err as Error).message };
  }
}
