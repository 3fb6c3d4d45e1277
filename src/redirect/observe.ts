// Observation of the pods that are not enrolled: the observer programs (connect4/6, sockops)
// attached to a pod cgroup parent, pinned under `<pinRoot>/observe/<id>/`. They only report
// (while a consumer listens), never redirect, and skip enrolled pods (bpf/redirect.bpf.c).
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, rmSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { log } from '../log.js';
import { OBSERVE_LINKS, detachPodDir, isUnder, listObserveDirs, type LoadedProgram } from './loader.js';
import { nativeFailure, type NativeBinding } from './native.js';
import { assertAbsolutePath } from './validate.js';

const rlog = log.child({ component: 'redirect' });

export class CgroupObservers {
  readonly #binding: NativeBinding;
  readonly #progs: ReadonlyMap<string, LoadedProgram>;
  readonly #pinRoot: string;
  readonly #cgroupRoot: string;

  constructor(o: { binding: NativeBinding; progs: ReadonlyMap<string, LoadedProgram>; pinRoot: string; cgroupRoot: string }) {
    this.#binding = o.binding;
    this.#progs = o.progs;
    this.#pinRoot = o.pinRoot;
    this.#cgroupRoot = o.cgroupRoot;
  }

  /** The pin directory of the observer at this cgroup: named by a hash of its path. */
  dir(cgroupPath: string): string {
    const id = createHash('sha256').update(resolve(cgroupPath)).digest('hex').slice(0, 16);
    return join(this.#pinRoot, 'observe', id);
  }

  /** See Redirector.observeCgroup. */
  async observe(cgroupPath: string): Promise<void> {
    assertAbsolutePath(cgroupPath, 'cgroupPath');
    const path = resolve(cgroupPath);
    if (!isUnder(path, this.#cgroupRoot)) throw new RangeError(`cgroupPath ${path} is not under the cgroup v2 root ${this.#cgroupRoot}`);
    const b = this.#binding;
    const dir = this.dir(path);
    const createdDir = !existsSync(dir);
    const undo: Array<() => Promise<void>> = [];
    let step = `reading ${path}`;
    try {
      const st = statSync(path, { bigint: true });
      if (!st.isDirectory()) throw new Error(`${path} is not a directory`);
      step = 'creating the pin directory';
      mkdirSync(dir, { recursive: true, mode: 0o700 });
      for (const l of OBSERVE_LINKS) {
        const prog = this.#progs.get(l.prog)!;
        const pin = join(dir, l.name);
        const info = b.linkInfo(pin);
        if (info && info.cgroupId === st.ino && info.attachType === prog.attachType) {
          // Pinned by this or an earlier agent: run the programs loaded now.
          step = `updating the pinned observer ${l.name} link`;
          await b.linkUpdate(pin, prog.fd);
          continue;
        }
        if (info) {
          step = `detaching the stale observer ${l.name} link`;
          await b.linkDetach(pin);
        }
        step = `attaching the observer ${l.name} to ${path}`;
        await b.linkCreate(prog.fd, path, prog.attachType, pin);
        undo.push(() => b.linkDetach(pin));
      }
    } catch (err) {
      for (const u of undo.reverse()) await u().catch((undoErr: unknown) => rlog.warn({ err: undoErr, cgroup: path }, 'undoing a half-done observer attach failed'));
      if (createdDir) rmSync(dir, { recursive: true, force: true });
      throw nativeFailure('NM_ERR_NATIVE', `attaching the observer failed while ${step}`, err, `cgroup ${path}`);
    }
    rlog.info({ cgroup: path }, 'observing the pods below this cgroup');
  }

  /** See Redirector.unobserveCgroup. */
  async unobserve(cgroupPath: string): Promise<boolean> {
    assertAbsolutePath(cgroupPath, 'cgroupPath');
    const dir = this.dir(cgroupPath);
    if (!existsSync(dir)) return false;
    const failures: unknown[] = [];
    await detachPodDir(this.#binding, dir, failures);
    if (failures.length > 0) throw nativeFailure('NM_ERR_NATIVE', `detaching the observer left ${failures.length} error(s); the first`, failures[0], `cgroup ${cgroupPath}`);
    rlog.info({ cgroup: resolve(cgroupPath) }, 'no longer observing the pods below this cgroup');
    return true;
  }

  /** See Redirector.unobserveAllCgroups. */
  async unobserveAll(): Promise<number> {
    const failures: unknown[] = [];
    const ids = listObserveDirs(this.#pinRoot);
    for (const id of ids) await detachPodDir(this.#binding, join(this.#pinRoot, 'observe', id), failures);
    if (failures.length > 0) throw nativeFailure('NM_ERR_NATIVE', `detaching the observers left ${failures.length} error(s); the first`, failures[0]);
    if (ids.length) rlog.info({ observers: ids.length }, 'no longer observing any pod cgroup');
    return ids.length;
  }

  /** The cgroup ids (inode numbers) observed now; 0n for an observer whose cgroup is gone. */
  observed(): bigint[] {
    const out: bigint[] = [];
    for (const id of listObserveDirs(this.#pinRoot)) {
      const info = this.#binding.linkInfo(join(this.#pinRoot, 'observe', id, OBSERVE_LINKS[0]!.name));
      if (info) out.push(info.cgroupId);
    }
    return out;
  }
}
