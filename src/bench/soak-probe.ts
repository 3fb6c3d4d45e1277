// The soak's instruments: the loader that runs inside the client pod (Python asyncio, no C:
// exactly N short HTTP/1.0 connections with bounded concurrency and its own deadline, one JSON
// progress line every 2 s), and the agent's samples (open fds, VmRSS, V8 heap from its metrics).
import { readdirSync, readFileSync } from 'node:fs';
import { httpGet } from '../cluster/index.js';
import { PORTS } from '../net/index.js';

export const LOADER_PY = String.raw`
import asyncio, json, sys, time
host, port, total, conc, seconds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
REQ = b"GET / HTTP/1.0\r\nHost: soak\r\n\r\n"
deadline = time.monotonic() + seconds
state = {"done": 0, "errors": 0, "started": 0, "kinds": {}}
t0 = time.monotonic()

async def one():
    r, w = await asyncio.open_connection(host, port)
    try:
        w.write(REQ)
        data = await r.read()
        if not data.startswith(b"HTTP/1.1 200"):
            raise ValueError("reply was not HTTP 200")
    finally:
        w.close()
        try:
            await w.wait_closed()
        except Exception:
            pass

async def worker():
    while state["started"] < total and time.monotonic() < deadline:
        state["started"] += 1
        try:
            await asyncio.wait_for(one(), 10)
        except Exception as e:
            state["errors"] += 1
            k = type(e).__name__
            state["kinds"][k] = state["kinds"].get(k, 0) + 1
        state["done"] += 1

def line(final):
    print(json.dumps({"final": final, "done": state["done"], "errors": state["errors"], "kinds": state["kinds"], "seconds": round(time.monotonic() - t0, 3)}), flush=True)

async def reporter():
    while True:
        await asyncio.sleep(2)
        line(False)

async def main():
    rep = asyncio.ensure_future(reporter())
    await asyncio.gather(*[worker() for _ in range(conc)])
    rep.cancel()
    line(True)

asyncio.run(main())
`;

export interface LoaderLine {
  final: boolean;
  done: number;
  errors: number;
  kinds: Record<string, number>;
  seconds: number;
}

export interface Sample {
  /** Seconds since the load started (negative: before it). */
  t: number;
  /** Connections the loader had completed. */
  done: number;
  fds: number;
  rssMb: number;
  heapUsedMb: number;
  heapTotalMb: number;
  /** Memory V8 tracks outside its heap (Buffers, ArrayBuffers). */
  externalMb: number;
}

/** A Prometheus text-format metric summed over its label sets (those containing `where`); 0 when absent. */
export function metricSum(text: string, name: string, where = ''): number {
  let sum = 0;
  for (const line of text.split('\n')) {
    if (!line.startsWith(name) || (line[name.length] !== ' ' && line[name.length] !== '{') || !line.includes(where)) continue;
    const v = Number(line.slice(line.lastIndexOf(' ') + 1));
    sum += v;
  }
  return sum;
}

export async function agentMetrics(): Promise<string> {
  const r = await httpGet(`http://127.0.0.1:${PORTS.metrics}/metrics`, 5000);
  if (r.status !== 200) throw new Error(`the agent's /metrics answered HTTP ${r.status}`);
  return r.body;
}

const MB = 1024 * 1024;

/** The agent's open fds (/proc/<pid>/fd), VmRSS (/proc/<pid>/status), V8 heap and external memory (its metrics). */
export async function sampleAgent(pid: number, t: number, done: number): Promise<Sample> {
  const fds = readdirSync(`/proc/${pid}/fd`).length;
  const rss = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  const m = await agentMetrics();
  return {
    t,
    done,
    fds,
    rssMb: rss ? Number(rss[1]) / 1024 : NaN,
    heapUsedMb: metricSum(m, 'nodemesh_agent_nodejs_heap_size_used_bytes') / MB,
    heapTotalMb: metricSum(m, 'nodemesh_agent_nodejs_heap_size_total_bytes') / MB,
    externalMb: metricSum(m, 'nodemesh_agent_nodejs_external_memory_bytes') / MB,
  };
}

/** The agent's connection counters, for the report: what it proxied, contained, holds open. */
export interface AgentCounters {
  opened: number;
  closed: number;
  errors: number;
  active: number;
}

export async function agentCounters(): Promise<AgentCounters> {
  const m = await agentMetrics();
  return {
    // Both ends of the same-node path report; the destination's count is one per connection.
    opened: metricSum(m, 'istio_tcp_connections_opened_total', 'reporter="destination"'),
    closed: metricSum(m, 'istio_tcp_connections_closed_total', 'reporter="destination"'),
    errors: metricSum(m, 'nodemesh_connection_errors_total'),
    active: metricSum(m, 'nodemesh_active_connections'),
  };
}
