// `nodemesh capture`: streams flow records (and with --pcap the plaintext) from the node's agent,
// or from every simulated node's agent with --all-nodes, as a live table, JSON lines or a pcap.
import { spawn } from 'node:child_process';
import { request } from 'node:http';
import { AgentError, UsageError } from '../errors.js';
import { CAPTURE_PATH, CaptureSession, FILTER_NAMES, filterParams, lineSplitter, parseFilter, PcapWriter, readAdminToken, type FilterName } from '../capture/index.js';
import { multiNodeNodes } from '../cluster/index.js';
import { agentPaths, PORTS, stateDir } from '../net/index.js';
import { nsenter } from '../sim/index.js';
import { parse, type Command } from './command.js';

const HELP = `Usage: nodemesh capture [filters] [--json] [--count N | --follow] [--pcap FILE] [--all-nodes]

Streams every flow the node's agent sees as it happens: connections the proxy relayed (with
pods, SPIFFE identities, the policy verdict and the HBONE peer) and, where the redirect
programs report them, connections that passed around the mesh or were dropped. With --pcap it
also writes the plaintext of the matching proxied connections (the bytes inside mTLS) to a
pcap file that tshark and Wireshark open. Record format: docs/capture.md.

Filters (ANDed):
  --pod NS/NAME          either end is this pod
  --namespace NS         either end is in this namespace
  --from SEL, --to SEL   the source / destination is a pod (NS/NAME), an IP or a CIDR
  --port N               the destination port (or the port the app dialed)
  --verdict V[,V]        allowed, denied, dropped, passed, observed
  --protocol P           tcp or http
  --since DURATION       first replay what the agent kept from this long ago (30s, 5m, 1h)

Output:
  --json                 one record per line (JSON), instead of the table
  --count N              stop after N records (default: follow until Ctrl-C)
  --follow               keep streaming (the default without --count)
  --pcap FILE            also write the plaintext as pcap, flushed per packet; Ctrl-C closes it
                         cleanly. Plaintext needs the agent's admin token (root reads it)

Where:
  --admin HOST:PORT      the agent's admin endpoint (default 127.0.0.1:${PORTS.admin})
  --state-dir DIR        where the agent keeps agent/admin-token (default $NODEMESH_STATE_DIR
                         or /run/nodemesh)
  --token-file FILE      the admin token to present (default <state-dir>/agent/admin-token)
  --all-nodes            every simulated node's agent (multi-node nodemesh up), entered
                         through its netns

Examples:
  nodemesh capture
  nodemesh capture --namespace shop --verdict denied
  nodemesh capture --from shop/frontend --to 10.244.0.0/16 --port 8080 --json --count 10
  nodemesh capture --since 5m --count 20
  nodemesh capture --to shop/backend --pcap /tmp/backend.pcap
      then: tshark -r /tmp/backend.pcap -q -z follow,tcp,ascii,0
  nodemesh capture --all-nodes --verdict dropped,passed
`;

const OPTIONS = {
  pod: { type: 'string' },
  namespace: { type: 'string' },
  from: { type: 'string' },
  to: { type: 'string' },
  port: { type: 'string' },
  verdict: { type: 'string' },
  protocol: { type: 'string' },
  since: { type: 'string' },
  json: { type: 'boolean' },
  count: { type: 'string' },
  follow: { type: 'boolean' },
  pcap: { type: 'string' },
  admin: { type: 'string' },
  'state-dir': { type: 'string' },
  'token-file': { type: 'string' },
  'all-nodes': { type: 'boolean' },
} as const;

/** One agent to stream from. */
interface Source {
  name: string;
  url: string;
  /** Where the agent's token lives, when not given. */
  tokenFile: string;
  netnsPath?: string;
}

interface Stream {
  stop(): void;
}

/** Streams from an agent on this host's network, in process. */
function httpStream(s: Source, headers: Record<string, string>, onChunk: (b: Buffer) => void, onEnd: (err?: Error) => void): Stream {
  let stopped = false;
  const req = request(s.url, { headers }, (res) => {
    if (res.statusCode !== 200) {
      let body = '';
      res.on('data', (d: Buffer) => (body += d));
      res.on('end', () => {
        const msg = (() => {
          try {
            return (JSON.parse(body) as { error?: string }).error ?? body.trim();
          } catch {
            return body.trim();
          }
        })();
        onEnd(new UsageError(`the agent at ${s.name} refused the capture (HTTP ${res.statusCode}): ${msg}`));
      });
      return;
    }
    res.on('data', onChunk);
    res.on('end', () => onEnd());
    res.on('error', (e) => onEnd(e));
  });
  req.on('error', (err: Error & { code?: string }) => {
    if (err.code === 'ECONNRESET' && stopped) return;
    onEnd(new AgentError('NM_ERR_AGENT_UNAVAILABLE', `cannot reach the agent's admin endpoint ${s.name} (${err.code ?? err.message}); is the agent running (nodemesh up)? Use --admin for another address`, { cause: err }));
  });
  req.end();
  return {
    stop: () => {
      stopped = true;
      req.destroy();
    },
  };
}

/** Streams from an agent inside a node's netns (multi-node simulator), through curl. */
function netnsStream(s: Source, headers: Record<string, string>, onChunk: (b: Buffer) => void, onEnd: (err?: Error) => void): Stream {
  const args = [`--net=${s.netnsPath}`, '--', 'curl', '-sS', '-N', '--fail-with-body', ...Object.entries(headers).flatMap(([k, v]) => ['-H', `${k}: ${v}`]), s.url];
  const child = spawn(nsenter(), args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let stopped = false;
  let body = '';
  let err = '';
  child.stdout.on('data', (d: Buffer) => {
    if (body.length < 4096) body += d.toString('utf8', 0, 4096);
    onChunk(d);
  });
  child.stderr.on('data', (d: Buffer) => (err += d));
  child.on('error', (e) => onEnd(e));
  child.on('close', (code) => {
    if (stopped) return onEnd();
    onEnd(code === 0 ? undefined : new AgentError('NM_ERR_AGENT_UNAVAILABLE', `the capture stream of node ${s.name} ended (curl exit ${code}): ${err.trim() || body.trim().slice(0, 300)}`));
  });
  return {
    stop: () => {
      stopped = true;
      child.kill('SIGTERM');
    },
  };
}

function tokenFor(file: string, required: boolean): string | undefined {
  if (required) return readAdminToken(file);
  try {
    return readAdminToken(file);
  } catch {
    return undefined; // records alone need no token from loopback
  }
}

export const captureCommand: Command = {
  path: ['capture'],
  summary: 'stream the flows of the node (records, verdicts, drops) live; --pcap writes the plaintext',
  help: HELP,
  async run(argv) {
    const { values, positionals } = parse(argv, OPTIONS, false);
    if (positionals.length) throw new UsageError(`unexpected argument ${JSON.stringify(positionals[0])}; see nodemesh capture --help`);
    const fv: Partial<Record<FilterName, string>> = {};
    for (const k of FILTER_NAMES) if (values[k] !== undefined) fv[k] = values[k];
    parseFilter(fv); // bad flags fail here, naming the flag, before anything connects
    let count: number | undefined;
    if (values.count !== undefined) {
      if (!/^\d+$/.test(values.count) || Number(values.count) < 1) throw new UsageError(`--count: ${JSON.stringify(values.count)} is not a positive number`);
      if (values.follow) throw new UsageError('--follow and --count cannot be used together: --count stops after N records, --follow never stops');
      count = Number(values.count);
    }
    if (values['all-nodes'] && values.admin) throw new UsageError('--all-nodes and --admin cannot be used together: --all-nodes finds each node\'s agent itself');
    const sd = stateDir(values['state-dir']);
    const query = new URLSearchParams({ ...filterParams(fv), ...(values.pcap ? { pcap: '1' } : {}) }).toString();
    const path = `${CAPTURE_PATH}${query ? `?${query}` : ''}`;
    let sources: Source[];
    if (values['all-nodes']) {
      const nodes = multiNodeNodes(sd);
      if (nodes.length === 0) throw new UsageError(`--all-nodes: no simulated nodes with their own agents under ${sd} (a multi-node nodemesh up); without it, capture reads this node's agent`);
      sources = nodes.map((n) => ({ name: n.name, url: `http://127.0.0.1:${PORTS.admin}${path}`, tokenFile: agentPaths(n.agentStateDir).adminToken, netnsPath: n.netnsPath! }));
    } else {
      const admin = values.admin ?? `127.0.0.1:${PORTS.admin}`;
      if (!/^(\[[^\]]+\]|[^:/]+):\d{1,5}$/.test(admin)) throw new UsageError(`--admin: ${JSON.stringify(admin)} is not HOST:PORT`);
      sources = [{ name: admin, url: `http://${admin}${path}`, tokenFile: agentPaths(sd).adminToken }];
    }
    // Tokens before the pcap file: a caller who may not capture plaintext gets no file either.
    const tokens = sources.map((s) => tokenFor(values['token-file'] ?? s.tokenFile, values.pcap !== undefined));
    const pcap = values.pcap ? new PcapWriter(values.pcap) : undefined;
    return new Promise<number>((resolve, reject) => {
      const streams: Stream[] = [];
      let open = sources.length;
      let finished = false;
      const finish = (code: number, err?: Error): void => {
        if (finished) return;
        finished = true;
        for (const s of streams) s.stop();
        pcap?.closeFile();
        process.off('SIGINT', onSignal);
        process.off('SIGTERM', onSignal);
        if (err) reject(err);
        else resolve(code);
      };
      const onSignal = (): void => {
        process.stderr.write(`\n${session.printed} record(s)${pcap ? `, ${pcap.packets} packet(s) written to ${values.pcap}` : ''}\n`);
        finish(0);
      };
      process.on('SIGINT', onSignal);
      process.on('SIGTERM', onSignal);
      const session = new CaptureSession({
        json: values.json ?? false,
        ...(count !== undefined ? { count } : {}),
        ...(pcap ? { pcap } : {}),
        multiNode: sources.length > 1 || values['all-nodes'] === true,
        out: (s) => process.stdout.write(s),
        err: (s) => process.stderr.write(s),
        onDone: () => finish(0),
      });
      try {
        for (const [i, s] of sources.entries()) {
          const token = tokens[i];
          const headers: Record<string, string> = token ? { authorization: `Bearer ${token}` } : {};
          const feed = lineSplitter((line) => session.line(s.name, line));
          const onEnd = (err?: Error): void => {
            if (err) return finish(1, err);
            if (--open === 0) finish(1, new AgentError('NM_ERR_AGENT_UNAVAILABLE', `the agent closed the capture stream (${s.name}); was it stopped?`));
          };
          streams.push(s.netnsPath ? netnsStream(s, headers, feed, onEnd) : httpStream(s, headers, feed, onEnd));
        }
      } catch (err) {
        finish(1, err as Error);
      }
    });
  },
};
