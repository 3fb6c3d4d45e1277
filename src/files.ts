// Atomic file writes: a temp dotfile in the same directory, fsync, rename. A reader (a
// container runtime, a restarted agent) sees the old content or the new, never half of either.
import { closeSync, fchmodSync, fsyncSync, mkdirSync, openSync, renameSync, rmSync, statSync, writeSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';

export interface AtomicWriteOptions {
  /** The mode of a new file (default 0644). */
  mode?: number;
  /** Keep the mode an existing file has instead of `mode` (default false). */
  keepMode?: boolean;
}

/** Writes `data` to `path` atomically, creating its directory; the mode is not narrowed by the umask. */
export function writeFileAtomic(path: string, data: string | Uint8Array, o: AtomicWriteOptions = {}): void {
  const dir = dirname(path);
  mkdirSync(dir, { recursive: true });
  let mode = o.mode ?? 0o644;
  if (o.keepMode) {
    try {
      mode = statSync(path).mode & 0o7777;
    } catch {
      /* a new file */
    }
  }
  const tmp = join(dir, `.${basename(path)}.tmp-${process.pid}-${Date.now()}`);
  const fd = openSync(tmp, 'w', mode);
  try {
    writeSync(fd, typeof data === 'string' ? Buffer.from(data) : data);
    fchmodSync(fd, mode);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  try {
    renameSync(tmp, path);
  } catch (e) {
    rmSync(tmp, { force: true });
    throw e;
  }
}
