// net.ipv4.tcp_migrate_req inside a pod's netns, so that an upgrade's listener handoff never
// resets a connection: the per-pod listeners of two agents share one SO_REUSEPORT group, and
// when the old agent closes its listener the kernel moves the connections still queued on it
// (handshake done or under way, not yet accepted) to the group's other listener instead of
// resetting them. The sysctl is per netns and off by default; kernel >= 5.14
// (Documentation/networking/ip-sysctl.rst, tcp_migrate_req).
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { delimiter, join } from 'node:path';
import { NativeError } from '../errors.js';
import { assertAbsolutePath } from './validate.js';

const SYSCTL = '/proc/sys/net/ipv4/tcp_migrate_req';

let nsenterPath: string | undefined;

/** util-linux nsenter: Node cannot setns, and /proc/sys/net answers for the caller's netns. */
function nsenter(): string {
  if (nsenterPath) return nsenterPath;
  for (const dir of [...(process.env.PATH ?? '').split(delimiter), '/usr/bin', '/bin', '/usr/sbin', '/sbin']) {
    if (dir && existsSync(join(dir, 'nsenter'))) return (nsenterPath = join(dir, 'nsenter'));
  }
  throw new NativeError('NM_ERR_NATIVE', 'nsenter (util-linux) is not installed; it sets net.ipv4.tcp_migrate_req in pod namespaces');
}

/**
 * Sets tcp_migrate_req in the netns at netnsPath to `value` and answers what it was before.
 * Only the network namespace is entered: /proc/sys/net resolves to the netns of the task
 * that opens it, whatever procfs mount it goes through.
 */
export function setMigrateReq(netnsPath: string, value: 0 | 1): Promise<number> {
  assertAbsolutePath(netnsPath, 'netnsPath');
  // The path and value are arguments, never part of the script text.
  const script = 'f=$1; cat "$f" && echo "$2" > "$f"';
  return new Promise((resolve, reject) => {
    execFile(nsenter(), [`--net=${netnsPath}`, '--', 'sh', '-c', script, 'sh', SYSCTL, String(value)], { timeout: 5000 }, (err, stdout, stderr) => {
      const before = Number(stdout.trim());
      if (err || !Number.isInteger(before)) {
        reject(new NativeError('NM_ERR_NATIVE', `setting net.ipv4.tcp_migrate_req=${value} in ${netnsPath} failed: ${(stderr || err?.message || 'no output').trim()}`, { cause: err ?? undefined }));
        return;
      }
      resolve(before);
    });
  });
}
