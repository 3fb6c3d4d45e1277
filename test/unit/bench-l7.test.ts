// The L7 benchmark's own pieces: h2load's summary and per-request log parsed (percentiles,
// failures), its rate command line, the cluster config (HTTP Services target only 8081/8082, so
// the mesh benchmark's 8080 stays L4) and the nginx configs, checked by nginx itself.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { h2loadRateArgs, parseH2load, parseH2loadLog } from '../../src/bench/h2load.js';
import { reverseProxyConfig, RP_PORTS, writeL7BenchConfig } from '../../src/bench/l7-cluster.js';
import { checkConfigDir } from '../../src/controlplane/index.js';
import { loadSnapshot } from '../../src/controlplane/sources.js';
import { podPortsFor, servicesOf } from '../../src/controlplane/translate.js';

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});
const tmp = (): string => {
  const d = mkdtempSync(join(tmpdir(), 'nodemesh-bench-l7-'));
  dirs.push(d);
  return d;
};

describe('h2load output', () => {
  it('reads req/s and counts failed and timed-out requests as errors', () => {
    const ok = parseH2load('finished in 3.00s, 1002.67 req/s, 148.83KB/s\nrequests: 3008 total, 3008 started, 3008 done, 3008 succeeded, 0 failed, 0 errored, 0 timeout\n');
    expect(ok).toEqual({ requestsPerSec: 1002.67, succeeded: 3008, errors: 0 });
    const bad = parseH2load('finished in 2.00s, 8000.00 req/s, 555.20KB/s\nrequests: 16125 total, 16144 started, 16125 done, 16000 succeeded, 125 failed, 125 errored, 3 timeout\n');
    expect(bad.errors).toBe(128);
    expect(() => parseH2load('h2load: could not connect')).toThrow(/printed no result/);
  });

  it('takes nearest-rank percentiles of the successful requests and counts the rest as failed', () => {
    const times = Array.from({ length: 100 }, (_, i) => 100 - i); // 1..100 µs, in reverse
    const log = [...times.map((t, i) => `${1000 + i}\t200\t${t}`), '2000\t-1\t5', '2001\t503\t7', ''].join('\n');
    expect(parseH2loadLog(log)).toEqual({ p50: 50, p90: 90, p99: 99, ok: 100, failed: 2 });
    expect(() => parseH2loadLog('1\t-1\t3\n')).toThrow(/no successful request/);
    expect(() => parseH2loadLog('1 200 3\n')).toThrow(/not start<TAB>status<TAB>µs/);
  });

  it('spreads the rate over the connections and staggers their start', () => {
    const a = h2loadRateArgs('http://10.0.0.1:80/', 16, 1000, 5, '/tmp/x.log');
    expect(a.slice(a.indexOf('--rps'), a.indexOf('--rps') + 2)).toEqual(['--rps', '62.5']);
    expect(a.slice(a.indexOf('-n'), a.indexOf('-n') + 2)).toEqual(['-n', '5000']);
    expect(a.join(' ')).toContain('--h1 -c 16 -r 1 --rate-period 1ms');
  });
});

describe('L7 benchmark config', () => {
  it('loads without a problem, and its Services make only 8081 and 8082 HTTP', () => {
    const dir = tmp();
    writeL7BenchConfig(dir);
    expect(checkConfigDir(dir).errors).toBe(0);
    const snap = loadSnapshot(dir);
    const ports = (ns: string, name: string) => {
      const pod = snap.pods.find((p) => p.metadata.namespace === ns && p.metadata.name === name)!;
      return servicesOf(pod, snap.services).flatMap((s) => podPortsFor(s, pod));
    };
    const http = [
      { servicePort: 80, targetPort: 8081, appProtocol: 'HTTP11' },
      { servicePort: 82, targetPort: 8082, appProtocol: 'HTTP2' },
    ];
    expect(ports('mesh', 'local')).toEqual(http);
    expect(ports('mesh', 'remote')).toEqual(http);
    expect(ports('sidecar', 'server')).toEqual(http);
    // The plain servers (no mesh, the reverse proxy's upstreams) have no Service at all.
    expect(ports('plain', 'local')).toEqual([]);
    for (const p of snap.pods) expect(ports(p.metadata.namespace, p.metadata.name).map((x) => x.targetPort)).not.toContain(8080);
  });

  const nginx = spawnSync('nginx', ['-v']).status === 0;
  it.skipIf(!nginx)('writes nginx configs nginx accepts: the servers with h2c on 8082, the reverse proxy with keep-alive upstreams', () => {
    const dir = tmp();
    writeL7BenchConfig(dir);
    const rp = reverseProxyConfig(dir, '10.244.0.3', '10.244.1.2');
    expect(rp).toContain('server 10.244.0.3:8081; keepalive 32;');
    expect(rp).toContain('server 10.244.1.2:8081; keepalive 32;');
    expect(rp).toContain(`listen ${RP_PORTS.h2Cross} http2;`);
    writeFileSync(join(dir, 'rp.conf'), rp);
    expect(readFileSync(join(dir, 'nginx-mesh-local.conf'), 'utf8')).toContain('listen 8082 http2;');
    for (const conf of ['rp.conf', 'nginx-mesh-local.conf']) {
      const r = spawnSync('nginx', ['-t', '-q', '-p', dir, '-c', join(dir, conf), '-e', 'stderr'], { encoding: 'utf8' });
      expect(r.stderr).toBe('');
      expect(r.status).toBe(0);
    }
    // nginx -t does refuse a broken one, so the check above means something.
    writeFileSync(join(dir, 'bad.conf'), rp.replace('keepalive 32;', 'keepalive;'));
    expect(spawnSync('nginx', ['-t', '-q', '-p', dir, '-c', join(dir, 'bad.conf'), '-e', 'stderr']).status).not.toBe(0);
  });
});
