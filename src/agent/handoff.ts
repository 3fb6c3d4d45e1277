// Two agents for one node (an upgrade, or a new agent started beside a live one): which of
// them holds the node (its pid file and CNI socket), and the periodic check by which the
// other one follows and, when the holder goes, takes its pods' redirection back. Neither
// agent ever removes what the other one registered.
import { readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import type { Logger } from '../log.js';
import { CniServer, type CniHandler } from './cni-server.js';
import { pidAlive } from '../pids.js';

/** fn's answer, or `otherwise` when it throws (a check that fails must not stop a stop). */
function answers<T>(fn: () => T, otherwise: T): T {
  try {
    return fn();
  } catch {
    return otherwise;
  }
}

/** The agent pid file as the node's claim: the agent named in it takes the CNI requests. */
export class NodeClaim {
  readonly #file: string;

  constructor(pidFile: string) {
    this.#file = pidFile;
  }

  /** Names this process as the holder, in one rename (never a moment without a holder). */
  claim(): void {
    const tmp = `${this.#file}.${process.pid}.tmp`;
    writeFileSync(tmp, `${process.pid}\n`);
    renameSync(tmp, this.#file);
  }

  /** The holder's pid while that process lives; undefined when none is named or it is gone. */
  holder(): number | undefined {
    let pid: number;
    try {
      pid = Number(readFileSync(this.#file, 'utf8').trim());
    } catch {
      return undefined;
    }
    return Number.isInteger(pid) && pid > 0 && pidAlive(pid) ? pid : undefined;
  }

  /** Removes the pid file only while it names this process (a newer holder keeps its claim). */
  release(): void {
    if (this.holder() === process.pid) rmSync(this.#file, { force: true });
  }
}

/** What the watch needs from the agent. */
export interface HandoffDeps {
  log: Logger;
  claim: NodeClaim;
  draining(): boolean;
  /** Takes the node back: the CNI socket, the pid file, and an adoption pass over the records. */
  reclaim(): Promise<void>;
  /** Closes this agent's listeners of pods whose record another agent removed; their UIDs. */
  enroller: { forgetUnrecorded(): Promise<string[]> };
  onForgotten(uids: string[]): void;
  /** This agent's open inbound listeners, per pod. */
  proxy: { inboundListeners(): { pod: { ip: string; namespace: string; name: string }; kind: 'plaintext' | 'hbone'; fd: number }[] };
  /** ensure: registers fd only where no listener is registered at all (true when it did); register: replaces. */
  redirect: {
    ensureInboundListener(podIp: string, kind: 'plaintext' | 'hbone', fd: number): boolean;
    registerInboundListener(podIp: string, kind: 'plaintext' | 'hbone', fd: number): void;
  };
}

/**
 * The periodic check of an agent that may share its node with another one:
 * - a live holder other than this process means this agent was superseded: it keeps serving
 *   what it has open but no longer reports pods (its view is the older one);
 * - no live holder while this agent is not stopping means the agent that took over let go
 *   (NodeHandoff.handBack) or is gone: this one takes the node back, and its inbound
 *   listeners replace the other agent's;
 * - a pod whose record is gone was unenrolled by the other agent: this one closes its own
 *   listeners for it;
 * - a pod of this agent with no inbound listener registered (the other agent died, and the
 *   kernel removed its entries with its sockets) gets this agent's listener back, so its
 *   inbound connects are refused for at most one interval.
 */
export class HandoffWatch {
  readonly #d: HandoffDeps;
  #timer: NodeJS.Timeout | undefined;
  #running = false;
  #supersededBy: number | undefined;

  constructor(d: HandoffDeps) {
    this.#d = d;
  }

  /** The pid of the agent that took this node over, while it lives. */
  get supersededBy(): number | undefined {
    return this.#supersededBy;
  }

  start(intervalMs = 500): void {
    this.#timer = setInterval(() => void this.tick(), intervalMs);
    this.#timer.unref();
  }

  stop(): void {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = undefined;
  }

  /** One check; overlapping calls are skipped. Never throws: a failure is logged and retried next time. */
  async tick(): Promise<void> {
    if (this.#running) return;
    this.#running = true;
    const log = this.#d.log;
    try {
      const holder = this.#d.claim.holder();
      if (holder === process.pid) {
        if (this.#supersededBy !== undefined) log.info({ was: this.#supersededBy }, 'this agent holds the node again');
        this.#supersededBy = undefined;
      } else if (holder !== undefined) {
        if (this.#supersededBy !== holder) {
          log.warn({ newAgent: holder }, 'another agent took over this node (an upgrade): this one keeps serving the connections and listeners it has open until it is stopped, and no longer reports pods');
        }
        this.#supersededBy = holder;
      } else if (!this.#d.draining()) {
        log.warn({ was: this.#supersededBy }, 'no live agent holds this node: taking it back (CNI socket, pid file, adoption, inbound listeners)');
        await this.#d.reclaim();
        // The holder's listeners are the registered ones, as after a takeover: replace the
        // entries of the agent that let go (it closes its listeners only once it sees this).
        for (const l of this.#d.proxy.inboundListeners()) {
          try {
            this.#d.redirect.registerInboundListener(l.pod.ip, l.kind, l.fd);
          } catch (err) {
            log.warn({ err, pod: `${l.pod.namespace}/${l.pod.name}`, kind: l.kind }, 'could not register the pod\'s inbound listener');
          }
        }
        this.#supersededBy = undefined;
      }
      const gone = await this.#d.enroller.forgetUnrecorded();
      if (gone.length) {
        log.info({ uids: gone }, 'closed this agent\'s listeners of pods the other agent unenrolled');
        this.#d.onForgotten(gone);
      }
      if (this.#d.draining()) return;
      for (const l of this.#d.proxy.inboundListeners()) {
        try {
          if (this.#d.redirect.ensureInboundListener(l.pod.ip, l.kind, l.fd)) {
            log.warn({ pod: `${l.pod.namespace}/${l.pod.name}`, kind: l.kind }, 'no inbound listener was registered for the pod (the other agent closed its own): registered this agent\'s');
          }
        } catch (err) {
          log.warn({ err, pod: `${l.pod.namespace}/${l.pod.name}`, kind: l.kind }, 'could not check or register the pod\'s inbound listener');
        }
      }
    } catch (err) {
      log.error({ err }, 'the handoff check failed; retrying');
    } finally {
      this.#running = false;
    }
  }
}

/**
 * The node's shared handles as one agent holds them: its CNI socket, its claim in the pid
 * file, and the watch that follows another agent of the node.
 */
export class NodeHandoff {
  readonly claim: NodeClaim;
  readonly #o: { cniSocket: string; pidFile: string; log: Logger; onCni: CniHandler };
  readonly #log: Logger;
  #cni?: CniServer;
  #watch?: HandoffWatch;
  /** The live agent this one took the node from, if any: it takes the node back when this one stops. */
  #predecessor: number | undefined;

  /** `log` is the root logger (the CNI server and the watch each take their own child). */
  constructor(o: { cniSocket: string; pidFile: string; log: Logger; node: string; onCni: CniHandler }) {
    this.#o = o;
    this.#log = o.log.child({ component: 'handoff', node: o.node });
    this.claim = new NodeClaim(o.pidFile);
  }

  /**
   * Takes the node's CNI requests (the socket is renamed over the path in one step, so a
   * plugin never finds it missing) and names this agent in the pid file.
   */
  async take(): Promise<void> {
    const before = this.claim.holder();
    if (before !== undefined && before !== process.pid) this.#predecessor = before;
    const old = this.#cni;
    this.#cni = await CniServer.listen(this.#o.cniSocket, this.#o.onCni, this.#o.log);
    this.claim.claim();
    await old?.close();
  }

  /** Starts the watch; taking the node back is take() and then `adopt`. */
  watch(d: Omit<HandoffDeps, 'log' | 'claim' | 'reclaim'> & { adopt: () => Promise<void> }): void {
    this.#watch = new HandoffWatch({
      ...d,
      log: this.#log,
      claim: this.claim,
      reclaim: async () => {
        await this.take();
        await d.adopt();
      },
    });
    this.#watch.start();
  }

  get supersededBy(): number | undefined {
    return this.#watch?.supersededBy;
  }

  /**
   * At the start of a stop: when this agent holds the node and the agent it took it from
   * still runs (a rollout rolled back), lets go of the claim and waits, at most `timeoutMs`,
   * until that agent has taken the node back and registered its own inbound listeners in
   * place of this one's (`stillRegistered` answers whether any of this agent's still is).
   * Only then does this one close its listeners, so the pods' inbound never goes a moment
   * without one. True when the node was handed back.
   */
  async handBack(stillRegistered: () => boolean, timeoutMs = 3000): Promise<boolean> {
    const prev = this.#predecessor;
    if (prev === undefined || this.claim.holder() !== process.pid) return false;
    try {
      process.kill(prev, 0);
    } catch {
      return false;
    }
    this.#watch?.stop();
    this.claim.release();
    this.#log.info({ to: prev }, 'stopping: handing the node back to the agent it was taken from');
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      const h = this.claim.holder();
      if (h !== undefined && h !== process.pid && !answers(stillRegistered, false)) return true;
      await new Promise((r) => setTimeout(r, 50));
    }
    this.#log.warn({ to: prev, waitedMs: timeoutMs }, 'the previous agent did not take the node back; stopping anyway');
    return false;
  }

  /** Stops the watch and the CNI socket (its path is removed only while it is still this agent's). */
  async close(): Promise<void> {
    this.#watch?.stop();
    await this.#cni?.close();
  }
}
