// Gate for suites that need root (netns, eBPF, cgroups): when not root they are skipped with
// one visible line saying why, never silently passed. CI runs as root, so there they run.
import { describe } from 'vitest';

export const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;

/** `describe` for a privileged suite; prints one SKIP line when not root. */
export function describePrivileged(name: string, fn: () => void): void {
  if (!isRoot) {
    process.stdout.write(`SKIP privileged suite "${name}": needs root (netns, eBPF, cgroups); run as root or in CI\n`);
    describe.skip(`${name} [skipped: not root]`, fn);
    return;
  }
  describe(name, fn);
}
