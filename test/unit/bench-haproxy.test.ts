// The mesh benchmark's haproxy sidecars (src/bench/haproxy.ts): the two configs' text (mutual
// TLS with verification required on both ends, the right addresses and ports), checked by
// haproxy itself with the run-time certificates, which chain to their CA and only to it.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { clientSidecarConfig, HAPROXY_PATH, haproxyMissing, HaproxySidecars, serverSidecarConfig, TLS_PORT_OFFSET, writeCerts } from '../../src/bench/haproxy.js';
import { HTTP_PORT, IPERF_PORT, SOCKPERF_BASE, SOCKPERF_PORTS } from '../../src/bench/pods.js';

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});
const tmp = (): string => {
  const d = mkdtempSync(join(tmpdir(), 'nodemesh-bench-haproxy-'));
  dirs.push(d);
  return d;
};

const SERVER_IP = '10.244.1.7';
const NAME = 'remote.plain.svc.cluster.local';
const lines = (cfg: string, word: string): string[] =>
  cfg
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l.split(/\s+/)[0] === word);

describe('haproxy sidecar configs', () => {
  const spec = { dir: '/tmp/x', serverIp: SERVER_IP, serverName: NAME };
  const client = clientSidecarConfig(spec);
  const server = serverSidecarConfig(spec);
  const last = SOCKPERF_BASE + SOCKPERF_PORTS - 1;

  it('client: plaintext in on loopback on the app ports, mutual TLS out to the server sidecar with the server verified', () => {
    expect(lines(client, 'bind')).toEqual([`bind 127.0.0.1:${IPERF_PORT},127.0.0.1:${HTTP_PORT},127.0.0.1:${SOCKPERF_BASE}-${last}`]);
    expect(HAPROXY_PATH.dial).toBe('127.0.0.1');
    const [srv, ...more] = lines(client, 'server');
    expect(more).toEqual([]);
    const w = srv!.split(/\s+/);
    expect(w[2]).toBe(`${SERVER_IP}:+${TLS_PORT_OFFSET}`);
    expect(srv).toContain(' ssl verify required ');
    expect(w[w.indexOf('ca-file') + 1]).toBe('/tmp/x/ca.pem');
    expect(w[w.indexOf('crt') + 1]).toBe('/tmp/x/client.pem');
    expect(w[w.indexOf('verifyhost') + 1]).toBe(NAME);
  });

  it('server: mutual TLS in on the pod IP (client certificate required), plaintext to the app on loopback', () => {
    const o = TLS_PORT_OFFSET;
    const [bind, ...more] = lines(server, 'bind');
    expect(more).toEqual([]);
    const w = bind!.split(/\s+/);
    expect(w[1]).toBe(`${SERVER_IP}:${IPERF_PORT + o},${SERVER_IP}:${HTTP_PORT + o},${SERVER_IP}:${SOCKPERF_BASE + o}-${last + o}`);
    expect(w[w.indexOf('crt') + 1]).toBe('/tmp/x/server.pem');
    expect(w[w.indexOf('ca-file') + 1]).toBe('/tmp/x/ca.pem');
    expect(bind).toMatch(/ verify required$/);
    // The TLS port minus the offset: each connection lands on the app port the client dialled.
    expect(lines(server, 'server')).toEqual([`server app 127.0.0.1:-${o}`]);
  });

  it('both: TCP, one thread, TLS 1.3 only, timeouts, and no log directive', () => {
    for (const cfg of [client, server]) {
      expect(lines(cfg, 'mode')).toEqual(['mode tcp']);
      expect(lines(cfg, 'nbthread')).toEqual(['nbthread 1']);
      expect(cfg).toMatch(/ssl-min-ver TLSv1\.3/);
      expect(lines(cfg, 'timeout').map((l) => l.split(/\s+/)[1])).toEqual(['connect', 'client', 'server']);
      expect(lines(cfg, 'log')).toEqual([]);
    }
  });
});

const missing = haproxyMissing();
if (missing) process.stderr.write(`bench-haproxy: ${missing}; haproxy -c and certificate checks skipped\n`);

describe.skipIf(missing !== undefined)('haproxy sidecar certificates and haproxy -c', () => {
  const verify = (caDir: string, crt: string) => spawnSync('openssl', ['verify', '-CAfile', join(caDir, 'ca.pem'), crt], { encoding: 'utf8' });

  it('makes a CA and two leaves that chain to it (and not to another CA), with their names', () => {
    const dir = tmp();
    writeCerts(dir, NAME, { client: 'spiffe://cluster.local/ns/plain/sa/client', server: 'spiffe://cluster.local/ns/plain/sa/remote' });
    expect(verify(dir, join(dir, 'client.crt')).status).toBe(0);
    expect(verify(dir, join(dir, 'server.crt')).status).toBe(0);
    const other = tmp();
    writeCerts(other, NAME, { client: 'spiffe://x/c', server: 'spiffe://x/s' });
    expect(verify(other, join(dir, 'server.crt')).status).not.toBe(0);
    expect(verify(other, join(other, 'server.crt')).status).toBe(0);
    const text = (f: string) => spawnSync('openssl', ['x509', '-in', join(dir, f), '-noout', '-ext', 'subjectAltName'], { encoding: 'utf8' }).stdout;
    expect(text('server.crt')).toContain(`DNS:${NAME}`);
    expect(text('server.crt')).toContain('URI:spiffe://cluster.local/ns/plain/sa/remote');
    expect(text('client.crt')).toContain('URI:spiffe://cluster.local/ns/plain/sa/client');
    // haproxy's crt files hold the certificate and then its key.
    for (const f of ['client.pem', 'server.pem']) expect(spawnSync('openssl', ['pkey', '-in', join(dir, f), '-noout']).status).toBe(0);
  });

  it('haproxy -c accepts both configs with those certificates, and refuses one whose certificate is missing', () => {
    const dir = tmp();
    writeCerts(dir, NAME, { client: 'spiffe://a/c', server: 'spiffe://a/s' });
    const spec = { dir, serverIp: SERVER_IP, serverName: NAME };
    const check = (name: string, cfg: string) => {
      writeFileSync(join(dir, name), cfg);
      return spawnSync('haproxy', ['-c', '-q', '-f', join(dir, name)], { encoding: 'utf8' });
    };
    for (const [name, cfg] of [
      ['client.cfg', clientSidecarConfig(spec)],
      ['server.cfg', serverSidecarConfig(spec)],
    ] as const) {
      const r = check(name, cfg);
      expect(r.stderr).toBe('');
      expect(r.status).toBe(0);
    }
    rmSync(join(dir, 'server.pem'));
    expect(check('server.cfg', serverSidecarConfig(spec)).status).not.toBe(0);
  });

  it('stop() removes the directory and kills nothing before start', () => {
    const s = new HaproxySidecars();
    expect(existsSync(s.dir)).toBe(true);
    expect(s.pids()).toEqual([]);
    s.stop();
    s.stop();
    expect(existsSync(s.dir)).toBe(false);
  });
});

describe('haproxyMissing', () => {
  it('names the Debian package when haproxy is not on PATH', () => {
    const path = process.env.PATH;
    try {
      process.env.PATH = '/nonexistent';
      expect(haproxyMissing()).toMatch(/^haproxy sidecar path skipped: haproxy and openssl not installed \(Debian package haproxy, openssl/);
    } finally {
      process.env.PATH = path;
    }
    expect(haproxyMissing()).toBe(missing);
  });
});
