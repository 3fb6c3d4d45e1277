// The agent's side of node-level capture: the admin token, the hub behind /debug/capture, the
// recorder fed by the proxy's flow records and by the redirect programs' kernel events, and the
// plaintext tap the proxy asks once per relayed connection.
import { existsSync, mkdirSync } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { join } from 'node:path';
import type { Registry } from 'prom-client';
import { CaptureHub, CaptureRecorder, loadOrCreateAdminToken, serveCapture } from '../capture/index.js';
import type { Logger } from '../log.js';
import { netnsCookie, type Redirector } from '../redirect/index.js';
import type { FlowLog, PeerInfo } from '../telemetry/index.js';

/** What the capture needs from the agent. */
export interface CaptureDeps {
  node: string;
  tokenFile: string;
  registry: Registry;
  flows: FlowLog;
  workloads: () => { byIp(ip: string): PeerInfo | undefined };
  log: Logger;
}

export class AgentCapture {
  readonly hub: CaptureHub;
  readonly recorder: CaptureRecorder;
  readonly #token: string;
  readonly #log: Logger;
  readonly #off: () => void;
  #offActive: (() => void) | undefined;
  /** Each served pod's netns cookie (`ns/name` → cookie), learnt from its listeners. */
  readonly #netns = new Map<string, bigint>();
  /** Each served pod's IP (`ns/name` → IP). */
  readonly #ips = new Map<string, string>();

  constructor(d: CaptureDeps) {
    this.#log = d.log;
    this.#token = loadOrCreateAdminToken(d.tokenFile);
    this.hub = new CaptureHub({ node: d.node, registry: d.registry });
    const spiffe = (p: PeerInfo | undefined) => (p?.principal ? `spiffe://${p.principal}` : undefined);
    this.recorder = new CaptureRecorder(this.hub, {
      byIp: (ip) => {
        const p = d.workloads().byIp(ip);
        if (!p?.workload || !p.namespace) return undefined;
        const identity = spiffe(p);
        return { pod: `${p.namespace}/${p.workload}`, ...(identity ? { identity } : {}) };
      },
      byNetns: (cookie) => {
        for (const [pod, c] of this.#netns) if (c === cookie) return pod;
        return undefined;
      },
      netnsOf: (pod) => this.#netns.get(pod),
      ipOf: (pod) => this.#ips.get(pod),
    });
    this.#off = d.flows.onFinish((f) => this.recorder.flow(f));
  }

  /**
   * Joins the redirect programs' kernel events (connects, sk_lookup verdicts, closes) while at
   * least one capture runs. With nobody capturing the programs emit nothing (one array lookup
   * per hook) and the agent decodes nothing: the data path pays no more than that.
   */
  attachKernel(redirect: Redirector): void {
    const source = { subscribe: (cb: Parameters<Redirector['onKernelEvents']>[0]) => redirect.onKernelEvents(cb), lost: () => redirect.kernelEventsLost() };
    const set = (active: boolean) => (active ? this.recorder.attach(source) : this.recorder.detach());
    this.#offActive = this.hub.onActive(set);
    if (this.hub.active) set(true);
  }

  /** A pod's listener fd (in its netns): outbound records join kernel events by that netns' cookie. */
  learnNetns(pod: string, fd: number, ip?: string): void {
    if (ip) this.#ips.set(pod, ip);
    try {
      this.#netns.set(pod, netnsCookie(fd));
    } catch (err) {
      this.#log.debug({ err, pod }, 'cannot read the netns cookie of a pod listener; its records join kernel events less');
    }
  }

  /** Forgets the pods that left (their netns cookie and IP), so the maps hold enrolled pods only. */
  retainPods(enrolled: ReadonlySet<string>): void {
    for (const pod of [...this.#netns.keys(), ...this.#ips.keys()]) {
      if (!enrolled.has(pod)) {
        this.#netns.delete(pod);
        this.#ips.delete(pod);
      }
    }
  }

  /** The plaintext tap for the proxy. */
  readonly tap = {
    open: (c: Parameters<CaptureHub['openTap']>[0]) => this.hub.openTap(c),
  };

  /** The /debug/capture route. */
  route = (req: IncomingMessage, url: URL, res: ServerResponse): 'streamed' => {
    serveCapture({ hub: this.hub, adminToken: this.#token, log: this.#log }, req, res, url);
    return 'streamed';
  };

  stop(): void {
    this.#off();
    this.#offActive?.();
    this.recorder.stop();
  }
}

/** /debug/capture on an agent started with --capture off. */
export const captureOffRoute = (): { status: number; body: object } => ({ status: 404, body: { error: 'capture is off on this agent (it was started with --capture off)' } });

/**
 * --capture off: removes the observers an earlier agent left attached (they would only cost a
 * map lookup each, but off means off). The redirect programs of enrolled pods stay: they check
 * nm_events_cfg (one array lookup) and emit nothing; Redirector.open already turned off the
 * kernel events a dead agent had left on.
 */
export async function captureOff(redirect: Redirector, log: Logger): Promise<void> {
  try {
    const n = await redirect.unobserveAllCgroups();
    log.info({ detachedObservers: n }, 'capture is off (--capture off): no observers, no capture records, /debug/capture refuses');
  } catch (err) {
    log.warn({ err }, 'capture is off, but detaching the observers an earlier agent attached failed');
  }
}

/**
 * Attaches the observer programs at the pods' cgroup parent, so `nodemesh capture` also sees
 * the pods that are not enrolled (observation only). `path`: the --observe-cgroup flag; an
 * explicit path is created when absent (the simulator's kubelet makes its pods there later);
 * without one, the kubelet's kubepods.slice (systemd driver) or kubepods (cgroupfs) is used
 * when it exists. A failure is logged: capture then shows enrolled pods only.
 */
export async function observePods(redirect: Redirector, cgroupRoot: string, path: string | undefined, log: Logger): Promise<void> {
  if (path === 'none') return;
  let target = path;
  if (target === undefined) {
    target = ['kubepods.slice', 'kubepods'].map((d) => join(cgroupRoot, d)).find((d) => existsSync(d));
    if (!target) {
      log.info({ cgroupRoot }, 'no kubepods cgroup under the cgroup root: capture observes enrolled pods only (--observe-cgroup sets one)');
      return;
    }
  }
  try {
    mkdirSync(target, { recursive: true });
    await redirect.observeCgroup(target);
    log.info({ cgroup: target }, 'observing the connections of pods that are not enrolled, for capture');
  } catch (err) {
    log.warn({ err, cgroup: target }, 'cannot observe the pods under this cgroup: capture shows enrolled pods only');
  }
}
