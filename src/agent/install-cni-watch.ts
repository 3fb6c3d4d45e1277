// `install-cni --watch`: keeps nodemesh-cni chained while the node's primary CNI (Calico,
// Cilium, flannel…) rewrites its conflist, as on its own restart. fs.watch on the conf dir
// wakes it at once, and a periodic check catches what inotify misses (a dir replaced, events
// dropped). A config that does not parse is reported and left alone until it is rewritten.
import { existsSync, watch, type FSWatcher } from 'node:fs';
import type { Logger } from 'pino';
import { installCni, uninstallCni, type InstallCniOptions, type InstallCniResult } from './install-cni.js';

export interface WatchCniOptions extends InstallCniOptions {
  log: Logger;
  /** The periodic check (default 10 s); fs.watch events trigger a check sooner. */
  intervalMs?: number;
  /** Events within this window are one check (default 100 ms): a rewrite is several events. */
  debounceMs?: number;
}

export interface CniWatcher {
  /** Resolves after the check running now, if any, has finished. */
  idle(): Promise<void>;
  /** How many times a check changed the config or the binary. */
  readonly repairs: number;
  /** Stops watching; with `uninstall`, then removes our entry and binary (install-cni --uninstall). */
  stop(o?: { uninstall?: boolean }): void;
}

/**
 * Installs now (throwing, as install-cni does, when the node has no valid primary config) and
 * then keeps the install in place until stopped. Later failures are logged, never thrown: the
 * watcher outlives a primary CNI caught halfway through writing its file.
 */
export function watchCni(o: WatchCniOptions): CniWatcher {
  const log = o.log.child({ component: 'install-cni', confDir: o.confDir });
  const first = installCni(o);
  report(log, first);
  let repairs = 0;
  let lastError = '';
  let timer: NodeJS.Timeout | undefined;
  let stopped = false;
  const check = () => {
    timer = undefined;
    if (stopped) return;
    try {
      const r = installCni(o);
      if (r.confChanged || r.binaryChanged) {
        repairs++;
        report(log, r);
      }
      if (lastError) log.info({ confFile: r.confFile }, 'CNI config readable again; nodemesh-cni is chained');
      lastError = '';
    } catch (err) {
      // Say it once per distinct problem, not on every event of the dir.
      const msg = (err as Error).message;
      if (msg !== lastError) log.error({ err }, 'cannot chain nodemesh-cni; leaving the config as it is and trying again when it changes');
      lastError = msg;
    }
  };
  const soon = () => {
    if (!stopped && !timer) timer = setTimeout(check, o.debounceMs ?? 100);
  };
  let watcher: FSWatcher | undefined;
  const startWatch = () => {
    if (watcher || !existsSync(o.confDir)) return;
    try {
      watcher = watch(o.confDir, { persistent: true }, soon);
      watcher.on('error', (err) => {
        log.warn({ err }, 'watching the CNI conf dir failed; relying on the periodic check');
        watcher?.close();
        watcher = undefined;
      });
    } catch (err) {
      log.warn({ err }, 'cannot watch the CNI conf dir; relying on the periodic check');
    }
  };
  startWatch();
  const periodic = setInterval(() => {
    startWatch();
    soon();
  }, o.intervalMs ?? 10_000);
  return {
    get repairs() {
      return repairs;
    },
    async idle() {
      while (timer) await new Promise((r) => setTimeout(r, 10));
    },
    stop({ uninstall = false } = {}) {
      stopped = true;
      clearInterval(periodic);
      if (timer) clearTimeout(timer);
      timer = undefined;
      watcher?.close();
      if (!uninstall) return;
      const r = uninstallCni(o);
      log.info({ unchained: r.unchained, removedBinary: r.removedBinary }, 'nodemesh-cni uninstalled');
    },
  };
}

function report(log: Logger, r: InstallCniResult): void {
  log.info({ confFile: r.confFile, binary: r.binary, confChanged: r.confChanged, binaryChanged: r.binaryChanged }, r.confChanged ? 'nodemesh-cni chained' : 'nodemesh-cni already chained');
}
