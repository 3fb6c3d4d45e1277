// The benchmark's child processes (the control plane, each xDS client): forked with an IPC
// channel, their reports taken from an inbox with bounded waits, stopped by PID.
import { fork, type ChildProcess } from 'node:child_process';
import type { CpCommand } from './cp-server.js';
import { nowMs, type AgentCommand } from './xds-agent.js';

export function progress(msg: string): void {
  process.stderr.write(`==> ${msg}\n`);
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export class Child<M extends { type: string }> {
  readonly proc: ChildProcess;
  readonly spawnedMs = nowMs();
  readonly #inbox: M[] = [];
  readonly #wake = new Set<() => void>();
  #exited: string | undefined;

  constructor(
    readonly name: string,
    module: string,
    args: string[],
    logFd: number,
    readonly logFile: string,
  ) {
    this.proc = fork(module, args, { execArgv: ['--expose-gc'], stdio: ['ignore', logFd, logFd, 'ipc'] });
    const wake = () => {
      for (const w of this.#wake) w();
    };
    this.proc.on('message', (m) => {
      this.#inbox.push(m as M);
      wake();
    });
    this.proc.on('exit', (code, signal) => {
      this.#exited = `exited (code ${code}, signal ${signal})`;
      wake();
    });
    this.proc.on('error', (err) => {
      this.#exited ??= `failed: ${err.message}`;
      wake();
    });
  }

  get pid(): number {
    return this.proc.pid ?? -1;
  }

  get running(): boolean {
    return this.proc.exitCode === null && this.proc.signalCode === null && this.#exited === undefined;
  }

  send(m: AgentCommand | CpCommand | { type: 'cpu' | 'mem' } | { type: 'requests'; from: number }): void {
    if (this.running) this.proc.send(m);
  }

  /** The first message (already received or to come) that `pred` accepts, taken from the inbox. */
  take<T extends M>(pred: (m: M) => m is T, what: string, timeoutMs: number): Promise<T> {
    return new Promise((resolve, reject) => {
      const check = (): boolean => {
        const i = this.#inbox.findIndex(pred);
        if (i >= 0) return done(() => resolve(this.#inbox.splice(i, 1)[0] as T));
        const err = this.#inbox.find((m) => m.type === 'error') as { message?: string } | undefined;
        if (err) return done(() => reject(new Error(`${this.name} failed while we waited for ${what}:\n${err.message}`)));
        if (this.#exited) return done(() => reject(new Error(`${this.name} (pid ${this.pid}) ${this.#exited} while we waited for ${what}; see ${this.logFile}`)));
        return false;
      };
      const timer = setTimeout(
        () => done(() => reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what} from ${this.name} (pid ${this.pid}); see ${this.logFile}`))),
        timeoutMs,
      );
      const done = (f: () => void): true => {
        clearTimeout(timer);
        this.#wake.delete(wakeUp);
        f();
        return true;
      };
      const wakeUp = () => void check();
      if (!check()) this.#wake.add(wakeUp);
    });
  }

  /** SIGTERM, then SIGKILL after 3 s; resolves once the process is gone (or 6 s passed). */
  async stop(): Promise<void> {
    if (!this.running) return;
    const gone = new Promise<void>((r) => this.proc.once('exit', () => r()));
    const within = (ms: number) => Promise.race([gone.then(() => true), sleep(ms).then(() => false)]);
    this.proc.kill('SIGTERM');
    if (await within(3000)) return;
    this.proc.kill('SIGKILL');
    if (!(await within(3000))) progress(`warning: ${this.name} (pid ${this.pid}) did not exit after SIGKILL`);
  }
}

/** What cleanup needs of a child, whatever it reports. */
export interface Stoppable {
  readonly proc: ChildProcess;
  readonly running: boolean;
  stop(): Promise<void>;
}
