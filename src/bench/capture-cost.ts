// What node-level capture costs per connection with nobody capturing, measured in process: the
// agent's one piece of per-connection capture work then (a finished proxy flow becomes a record
// in the --since ring, CaptureRecorder.flow → CaptureHub.publish), timed over many connections
// shaped like the benchmark's (a same-node hand-off is two flow records, one capture record).
import { Registry } from 'prom-client';
import { CaptureHub, CaptureRecorder } from '../capture/index.js';
import type { FlowRecord } from '../telemetry/index.js';
import { median } from './tools.js';

function pair(i: number): [FlowRecord, FlowRecord] {
  const port = 20000 + (i % 40000);
  const src = { ip: '10.244.0.4', port, workload: 'client', namespace: 'mesh', principal: 'cluster.local/ns/mesh/sa/default' };
  const dst = { ip: '10.244.0.5', port: 8080, workload: 'local', namespace: 'mesh', principal: 'cluster.local/ns/mesh/sa/default' };
  const base = { src, dst, originalDst: '10.244.0.5:8080', startedAt: new Date().toISOString(), durationMs: 1, bytesSent: 78, bytesReceived: 1262, responseFlags: '-', open: false, policy: { allowed: true } };
  return [
    { ...base, id: 2 * i, direction: 'outbound', pod: 'mesh/client', upstream: '(same node, in process)' },
    { ...base, id: 2 * i + 1, direction: 'inbound', pod: 'mesh/local' },
  ] as [FlowRecord, FlowRecord];
}

/** CPU ns per same-node connection that capture adds with no consumer: median of `runs` runs. */
export async function recordCostNs(connections = 100_000, runs = 3): Promise<number> {
  const per: number[] = [];
  for (let r = 0; r < runs; r++) {
    const hub = new CaptureHub({ node: 'bench', registry: new Registry() });
    const rec = new CaptureRecorder(hub, { byIp: () => undefined, byNetns: () => undefined, netnsOf: () => undefined });
    const flows = Array.from({ length: connections }, (_, i) => pair(i));
    const t0 = process.cpuUsage();
    for (let i = 0; i < flows.length; i++) {
      const [out, inb] = flows[i]!;
      rec.flow(out);
      rec.flow(inb);
      // Run the recorder's microtasks as a turn of the event loop would, not 100,000 at once.
      if (i % 64 === 63) await Promise.resolve();
    }
    const t = process.cpuUsage(t0);
    rec.stop();
    if (hub.recent().length === 0) throw new Error('the recorder kept no record: the measurement measured nothing');
    per.push(((t.user + t.system) * 1000) / connections);
  }
  return median(per);
}
