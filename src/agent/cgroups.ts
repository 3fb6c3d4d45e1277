// Finds a pod's cgroup v2 directory from its UID, as a node agent must: CNI does not pass
// it. Both kubelet cgroup drivers are recognised: cgroupfs (`pod<uid>`) and systemd
// (`kubepods-<qos>-pod<uid with _>.slice`).
import { readdirSync } from 'node:fs';
import { join } from 'node:path';

export function podCgroupNames(uid: string): string[] {
  return [`pod${uid}`, `pod${uid.replaceAll('-', '_')}.slice`];
}

/** Breadth-first search below `root`, at most `maxDepth` levels, skipping unreadable dirs. */
export function findPodCgroup(root: string, uid: string, maxDepth = 6): string | undefined {
  const names = podCgroupNames(uid);
  let level = [root];
  for (let depth = 0; depth < maxDepth && level.length > 0; depth++) {
    const next: string[] = [];
    for (const dir of level) {
      let ents;
      try {
        ents = readdirSync(dir, { withFileTypes: true });
      } catch {
        continue;
      }
      for (const e of ents) {
        if (!e.isDirectory()) continue;
        if (names.some((n) => e.name === n || e.name.endsWith(`-${n}`))) return join(dir, e.name);
        next.push(join(dir, e.name));
      }
    }
    level = next;
  }
  return undefined;
}
