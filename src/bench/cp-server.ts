// The control plane as the benchmark runs it: a child process running ControlPlane.start (what
// `nodemesh control-plane` runs) with each rescan timed, answering memory and CPU queries over IPC.
import { parseArgs } from 'node:util';
import { ControlPlane } from '../controlplane/index.js';
import { TYPE_ADDRESS, TYPE_AUTHORIZATION } from '../xds/index.js';
import { memoryReport, nowMs, type MemoryReport } from './xds-agent.js';

/** What the control-plane process tells the parent. */
export type CpReport =
  | { type: 'ready'; address: string; nodeSecret: string; rootCert: string; startMs: number; readyMs: number; addresses: number; authorizations: number; errors: string[] }
  /** A rescan that changed something: when it started, finished parsing, and had queued every push. */
  | { type: 'rescan'; startMs: number; parsedMs: number; doneMs: number; cpuMs: number; pushes: number }
  | (MemoryReport & { streams: number })
  | { type: 'cpu'; cpuMs: number }
  | { type: 'error'; message: string };

export type CpCommand = { type: 'mem' } | { type: 'cpu' };

/** The `--role` value that makes bench/controlplane.js this process instead of the parent. */
export const CP_ROLE = 'control-plane';

/** Runs ControlPlane.start (what `nodemesh control-plane` runs) with its stages timed. */
export async function serveControlPlane(argv: string[]): Promise<void> {
  const send = (r: CpReport): void => void process.send?.(r);
  process.on('disconnect', () => process.exit(0));
  const { values } = parseArgs({ args: argv, options: { role: { type: 'string' }, config: { type: 'string' }, 'state-dir': { type: 'string' }, 'debounce-ms': { type: 'string' } } });
  const startMs = nowMs();
  const debounce = values['debounce-ms'];
  const cp = await ControlPlane.start({
    configDir: values.config!,
    stateDir: values['state-dir']!,
    listen: '127.0.0.1:0',
    admin: '127.0.0.1:0',
    ...(debounce ? { debounceMs: Number(debounce) } : {}),
  });
  // Time each rescan that changes something. The `change` listener prepended here runs before
  // the control plane's own, which translates and queues the pushes inside rescan().
  const config = cp.config;
  const rescan = config.rescan.bind(config);
  let parsedMs = NaN;
  let pushes = 0;
  config.prependListener('change', () => (parsedMs = nowMs()));
  cp.xds.on('push', () => pushes++);
  config.rescan = (force?: boolean): boolean => {
    const t0 = nowMs();
    const cpu0 = process.cpuUsage();
    pushes = 0;
    const changed = rescan(force);
    if (changed) {
      const cpu = process.cpuUsage(cpu0);
      send({ type: 'rescan', startMs: t0, parsedMs, doneMs: nowMs(), cpuMs: (cpu.user + cpu.system) / 1000, pushes });
    }
    return changed;
  };
  process.on('message', (c: CpCommand) => {
    if (c.type === 'mem') send({ ...memoryReport(), streams: cp.xds.streams().length });
    else if (c.type === 'cpu') {
      const u = process.cpuUsage();
      send({ type: 'cpu', cpuMs: (u.user + u.system) / 1000 });
    }
  });
  const errors = cp.configErrors().problems.filter((p) => p.severity === 'error');
  send({
    type: 'ready',
    address: cp.address,
    nodeSecret: cp.paths.nodeSecret ?? '', // none on Kubernetes
    rootCert: cp.paths.rootCert,
    startMs,
    readyMs: nowMs(),
    addresses: cp.xds.versions(TYPE_ADDRESS).size,
    authorizations: cp.xds.versions(TYPE_AUTHORIZATION).size,
    errors: errors.map((p) => `${p.file}:${p.line}: ${p.message}`),
  });
}
