// The root pino logger. Components take a child: `log.child({ component: 'outbound' })`.
import { pino, type Logger } from 'pino';

export type { Logger };

function level(): string {
  return process.env.NODEMESH_LOG_LEVEL ?? (process.env.VITEST ? 'silent' : 'info');
}

/** Logs JSON lines to stderr, so stdout stays free for command output. */
export const log: Logger = pino(
  { level: level(), base: { pid: process.pid }, serializers: { err: pino.stdSerializers.err } },
  pino.destination({ fd: 2, sync: false }),
);

export function createLogger(dest: number | string, lvl = level()): Logger {
  return pino(
    { level: lvl, base: { pid: process.pid }, serializers: { err: pino.stdSerializers.err } },
    pino.destination(typeof dest === 'number' ? { fd: dest, sync: false } : { dest, mkdir: true, sync: false }),
  );
}
