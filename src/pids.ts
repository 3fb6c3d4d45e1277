// Whether a process exists, by pid: the one check behind pid files, node claims and the
// kernel-events owner (signal 0; EPERM means it exists but belongs to someone else).

export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}
