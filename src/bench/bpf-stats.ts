// The kernel's own accounting of BPF program run time (kernel.bpf_stats_enabled: run_time_ns and
// run_cnt per program, read with bpftool), for what the redirect and observer programs cost per
// connection. The sysctl is turned on only while a benchmark reads it and restored after.
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';

const SYSCTL = '/proc/sys/kernel/bpf_stats_enabled';

/** Run time and runs of our programs (name starts with nm_), summed by program name. */
export type BpfRunTimes = Map<string, { ns: number; runs: number }>;

export class BpfStats {
  readonly #before: string;

  private constructor(before: string) {
    this.#before = before;
  }

  /** Turns the kernel's BPF run-time accounting on; `restore()` puts the sysctl back. */
  static enable(): BpfStats {
    const before = readFileSync(SYSCTL, 'utf8').trim();
    writeFileSync(SYSCTL, '1');
    return new BpfStats(before);
  }

  restore(): void {
    writeFileSync(SYSCTL, this.#before);
  }

  /** Now, for every loaded program named nm_* (every node's agent, summed by name). */
  static read(): BpfRunTimes {
    const r = spawnSync('bpftool', ['prog', 'show', '--json'], { encoding: 'utf8', maxBuffer: 64 << 20 });
    if (r.status !== 0) throw new Error(`bpftool prog show failed (exit ${r.status}): ${r.stderr}`);
    const out: BpfRunTimes = new Map();
    for (const p of JSON.parse(r.stdout) as { name?: string; run_time_ns?: number; run_cnt?: number }[]) {
      if (!p.name?.startsWith('nm_')) continue;
      const t = out.get(p.name) ?? { ns: 0, runs: 0 };
      t.ns += p.run_time_ns ?? 0;
      t.runs += p.run_cnt ?? 0;
      out.set(p.name, t);
    }
    return out;
  }

  /** What ran between two reads. */
  static diff(a: BpfRunTimes, b: BpfRunTimes): BpfRunTimes {
    const out: BpfRunTimes = new Map();
    for (const [name, t] of b) {
      const s = a.get(name) ?? { ns: 0, runs: 0 };
      if (t.runs > s.runs) out.set(name, { ns: t.ns - s.ns, runs: t.runs - s.runs });
    }
    return out;
  }

  static totalNs(t: BpfRunTimes): number {
    let n = 0;
    for (const v of t.values()) n += v.ns;
    return n;
  }
}
