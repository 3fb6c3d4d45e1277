// The control plane as the benchmark runs it: a child process running ControlPlane.start (what
// `nodemesh control-plane` runs) on the config directory or the Kubernetes API, with each
// recompute timed, answering memory and CPU queries over IPC.
import type { EventEmitter } from 'node:events';
import { parseArgs } from 'node:util';
import { pino } from 'pino';
import { ControlPlane } from '../controlplane/index.js';
import { log } from '../log.js';
import { TYPE_ADDRESS, TYPE_AUTHORIZATION } from '../xds/index.js';
import { memoryReport, nowMs, type MemoryReport } from './xds-agent.js';

/** What the control-plane process tells the parent. */
export type CpReport =
  | {
      type: 'ready';
      address: string;
      nodeSecret: string;
      rootCert: string;
      /** ControlPlane.start() called; `syncedMs` (Kubernetes source): every informer listed once; `readyMs`: serving. */
      startMs: number;
      syncedMs?: number;
      readyMs: number;
      addresses: number;
      authorizations: number;
      errors: string[];
    }
  /** A recompute that changed something: when it started, finished parsing, and had queued every push. */
  | { type: 'rescan'; startMs: number; parsedMs: number; doneMs: number; cpuMs: number; pushes: number }
  | (MemoryReport & { streams: number })
  | { type: 'cpu'; cpuMs: number }
  | { type: 'error'; message: string };

export type CpCommand = { type: 'mem' } | { type: 'cpu' };

/** The `--role` value that makes bench/controlplane.js this process instead of the parent. */
export const CP_ROLE = 'control-plane';

/** The line KubeSource logs once every informer has listed (src/controlplane/kube-source.ts). */
const KUBE_SYNCED_MSG = 'Kubernetes source synced';

const cpuMsOf = (u: NodeJS.CpuUsage): number => (u.user + u.system) / 1000;

/** Runs ControlPlane.start (what `nodemesh control-plane` runs) with its stages timed. */
export async function serveControlPlane(argv: string[]): Promise<void> {
  const send = (r: CpReport): void => void process.send?.(r);
  process.on('disconnect', () => process.exit(0));
  const { values } = parseArgs({
    args: argv,
    options: { role: { type: 'string' }, config: { type: 'string' }, kubeconfig: { type: 'string' }, 'state-dir': { type: 'string' }, 'debounce-ms': { type: 'string' } },
  });
  const kubeconfig = values.kubeconfig;
  let syncedMs: number | undefined;
  // The moment the informers have synced is inside ControlPlane.start: the source logs it, so the
  // logger (the root logger's settings, plus this hook) notes the time of that line.
  const logger = kubeconfig
    ? pino(
        {
          level: log.level,
          base: { pid: process.pid },
          serializers: { err: pino.stdSerializers.err },
          hooks: {
            logMethod(args, method) {
              if (syncedMs === undefined && args.includes(KUBE_SYNCED_MSG as never)) syncedMs = nowMs();
              method.apply(this, args);
            },
          },
        },
        pino.destination({ fd: 2, sync: false }),
      )
    : undefined;
  const startMs = nowMs();
  const debounce = values['debounce-ms'];
  const cp = await ControlPlane.start({
    ...(kubeconfig ? { kubernetes: { kubeconfig } } : { configDir: values.config! }),
    stateDir: values['state-dir']!,
    listen: '127.0.0.1:0',
    admin: '127.0.0.1:0',
    ...(debounce ? { debounceMs: Number(debounce) } : {}),
    ...(logger ? { logger } : {}),
  });
  let pushes = 0;
  cp.xds.on('push', () => pushes++);
  if (kubeconfig) {
    // The source emits `change` with each new snapshot; the control plane's own listener
    // translates and queues the pushes. One listener before it and one after time that.
    const source = cp.source as EventEmitter;
    let t0 = NaN;
    let cpu0 = process.cpuUsage();
    source.prependListener('change', () => {
      t0 = nowMs();
      cpu0 = process.cpuUsage();
      pushes = 0;
    });
    source.on('change', () => {
      if (pushes > 0) send({ type: 'rescan', startMs: t0, parsedMs: t0, doneMs: nowMs(), cpuMs: cpuMsOf(process.cpuUsage(cpu0)), pushes });
    });
  } else {
    // Time each rescan that changes something. The `change` listener prepended here runs before
    // the control plane's own, which translates and queues the pushes inside rescan().
    const config = cp.config;
    const rescan = config.rescan.bind(config);
    let parsedMs = NaN;
    config.prependListener('change', () => (parsedMs = nowMs()));
    config.rescan = (force?: boolean): boolean => {
      const t0 = nowMs();
      const cpu0 = process.cpuUsage();
      pushes = 0;
      const changed = rescan(force);
      if (changed) send({ type: 'rescan', startMs: t0, parsedMs, doneMs: nowMs(), cpuMs: cpuMsOf(process.cpuUsage(cpu0)), pushes });
      return changed;
    };
  }
  process.on('message', (c: CpCommand) => {
    if (c.type === 'mem') send({ ...memoryReport(), streams: cp.xds.streams().length });
    else if (c.type === 'cpu') send({ type: 'cpu', cpuMs: cpuMsOf(process.cpuUsage()) });
  });
  const errors = cp.configErrors().problems.filter((p) => p.severity === 'error');
  send({
    type: 'ready',
    address: cp.address,
    nodeSecret: cp.paths.nodeSecret ?? '', // none on Kubernetes
    rootCert: cp.paths.rootCert,
    startMs,
    ...(syncedMs === undefined ? {} : { syncedMs }),
    readyMs: nowMs(),
    addresses: cp.xds.versions(TYPE_ADDRESS).size,
    authorizations: cp.xds.versions(TYPE_AUTHORIZATION).size,
    errors: errors.map((p) => `${p.file}:${p.line}: ${p.message}`),
  });
}
