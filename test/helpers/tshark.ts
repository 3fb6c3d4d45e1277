// Reads pcap files back with real tshark (Debian package `tshark`): what a TCP stream carried
// each way, as `tshark -z follow,tcp,raw` reassembles it.
import { execFileSync, spawnSync } from 'node:child_process';

export const hasTshark = spawnSync('tshark', ['-v'], { stdio: 'ignore' }).status === 0;

/** Both directions of one TCP stream as tshark follows them (raw hex): node 0 is the client. */
export function follow(file: string, stream: number): { c2s: Buffer; s2c: Buffer; nodes: string[] } {
  const out = execFileSync('tshark', ['-r', file, '-q', '-z', `follow,tcp,raw,${stream}`], { encoding: 'utf8', maxBuffer: 256 << 20, stdio: ['ignore', 'pipe', 'ignore'] });
  const c2s: Buffer[] = [];
  const s2c: Buffer[] = [];
  const nodes: string[] = [];
  let body = false;
  for (const line of out.split('\n')) {
    const node = /^Node (\d): (.*)$/.exec(line);
    if (node) {
      nodes.push(node[2]!);
      body = true;
      continue;
    }
    if (!body || line.startsWith('====') || line.trim() === '') continue;
    (line.startsWith('\t') ? s2c : c2s).push(Buffer.from(line.trim(), 'hex'));
  }
  return { c2s: Buffer.concat(c2s), s2c: Buffer.concat(s2c), nodes };
}
