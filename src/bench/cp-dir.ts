// The control-plane benchmark's directory side: the control plane on the config directory, each
// client with a node token minted from the control plane's node secret, and each policy change a
// rewrite of the probe policy's file (in place, or replaced by rename).
import { renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { mintNodeToken, readNodeSecret } from '../controlplane/index.js';
import { probePolicy, type BenchConfig } from './cp-config.js';
import type { Bench, CpReady, CpRun, Credential, ProbeWrite } from './cp-runner.js';

/** Rewrites a probe policy file: in place (like most tools), or by rename (like editors and ConfigMap volumes). */
function fileWrite(bench: Bench, probe: BenchConfig['probe'], how: 'in-place' | 'rename'): ProbeWrite {
  return async (seq) => {
    const text = probePolicy(probe.name, seq);
    if (how === 'in-place') return () => writeFileSync(probe.file, text);
    const tmp = join(bench.configDir, 'policies', `.${probe.name}.tmp`);
    return () => {
      writeFileSync(tmp, text);
      renameSync(tmp, probe.file);
    };
  };
}

/** Each client proves its own node with a node token, as an agent does (no pods: no pod CIDR). */
function nodeTokens(bench: Bench, ready: CpReady, tag: string, n: number): (i: number) => Credential {
  const secret = readNodeSecret(ready.nodeSecret);
  return (i) => {
    const node = `bench-${tag}-${n}-${String(i).padStart(2, '0')}`;
    const token = join(bench.root, `${node}.token`);
    writeFileSync(token, mintNodeToken(secret, { node, podCidrs: [] }) + '\n', { mode: 0o600 });
    return { node, token };
  };
}

/** The directory source: a round per client count; the largest also by rename when asked. */
export function runDir(bench: Bench, tag: string, clients: number[], debounceMs: number | undefined, opts: { rename: boolean }): Promise<CpRun> {
  const largest = Math.max(...clients);
  const { probe, renameProbe } = bench.config;
  return bench.run(tag, {
    source: ['--config', bench.configDir],
    kind: 'dir',
    debounceMs,
    plans: (ready) =>
      clients.map((n) => ({
        n,
        credential: nodeTokens(bench, ready, tag, n),
        probe: { key: probe.key, write: fileWrite(bench, probe, 'in-place'), how: 'in place' },
        ...(opts.rename && n === largest ? { alt: { key: renameProbe.key, write: fileWrite(bench, renameProbe, 'rename'), how: 'policy file replaced by rename' } } : {}),
        cpMemory: n === largest,
      })),
  });
}
