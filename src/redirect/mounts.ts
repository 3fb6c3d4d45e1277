// Finding the node's cgroup v2 hierarchy and bpffs mounts from /proc/self/mountinfo.
import { readFileSync } from 'node:fs';
import { NativeError } from '../errors.js';

export interface MountEntry {
  mountPoint: string;
  fsType: string;
  source: string;
}

// mountinfo escapes space, tab, newline and backslash as \ooo octal.
function unescape(field: string): string {
  return field.replace(/\\([0-7]{3})/g, (_, oct: string) => String.fromCharCode(parseInt(oct, 8)));
}

/** Parses the text of /proc/<pid>/mountinfo (see proc(5)). */
export function parseMountinfo(text: string): MountEntry[] {
  const out: MountEntry[] = [];
  for (const line of text.split('\n')) {
    if (!line) continue;
    const [left, right] = line.split(' - ');
    if (!left || !right) continue;
    const fields = left.split(' ');
    const [fsType, source] = right.split(' ');
    if (fields.length < 5 || !fsType) continue;
    out.push({ mountPoint: unescape(fields[4]!), fsType, source: unescape(source ?? '') });
  }
  return out;
}

export function readMounts(mountinfoPath = '/proc/self/mountinfo'): MountEntry[] {
  return parseMountinfo(readFileSync(mountinfoPath, 'utf8'));
}

/**
 * The mount point of the cgroup v2 hierarchy: /sys/fs/cgroup on a unified node,
 * /sys/fs/cgroup/unified on a hybrid one. Throws NM_ERR_NO_CGROUP2 when there is none.
 */
export function findCgroup2Root(mounts: MountEntry[] = readMounts()): string {
  const roots = mounts.filter((m) => m.fsType === 'cgroup2').map((m) => m.mountPoint);
  if (roots.length === 0) {
    throw new NativeError('NM_ERR_NO_CGROUP2', 'no cgroup v2 hierarchy is mounted (nothing of type cgroup2 in /proc/self/mountinfo); ' +
        'mount one with `mount -t cgroup2 none /sys/fs/cgroup/unified`, or boot with systemd.unified_cgroup_hierarchy=1',
    );
  }
  const preferred = ['/sys/fs/cgroup', '/sys/fs/cgroup/unified'].find((p) => roots.includes(p));
  return preferred ?? [...roots].sort((a, b) => a.length - b.length)[0]!;
}

/** Mount points of every bpffs. */
export function findBpffsMounts(mounts: MountEntry[] = readMounts()): string[] {
  return mounts.filter((m) => m.fsType === 'bpf').map((m) => m.mountPoint);
}
