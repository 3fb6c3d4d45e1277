// The pcap writer read back by real tshark: two interleaved streams, both directions, segments
// larger than one IPv4 packet, FINs; tshark's follow gives exactly the bytes written, and with
// checksum validation on it flags no IPv4 or TCP checksum and no sequence problem.
import { execFileSync, spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { inetChecksum, MAX_SEGMENT, PcapWriter } from '../../src/capture/pcap.js';
import { follow, hasTshark } from '../helpers/tshark.js';

if (!hasTshark) process.stdout.write('SKIP capture-pcap: tshark is not installed (apt-get install tshark; make apt-deps)\n');

const dir = mkdtempSync(join(tmpdir(), 'nm-pcap-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

describe.runIf(hasTshark)('pcap writer read by tshark', () => {
  it('computes the Internet checksum of RFC 1071 over split buffers', () => {
    // RFC 1071's example bytes 00 01 f2 03 f4 f5 f6 f7 sum to 0xddf2; the checksum is its complement.
    const b = Buffer.from([0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]);
    expect(inetChecksum([b])).toBe(~0xddf2 & 0xffff);
    expect(inetChecksum([b.subarray(0, 3), b.subarray(3, 5), b.subarray(5)])).toBe(~0xddf2 & 0xffff);
  });

  it('holds exactly the bytes written, both ways, for two interleaved streams', () => {
    const file = join(dir, 'two.pcap');
    const w = new PcapWriter(file);
    const a = { up: randomBytes(200_000), down: randomBytes(150_003) };
    const b = { up: Buffer.from('GET / HTTP/1.1\r\nhost: b\r\n\r\n'), down: randomBytes(MAX_SEGMENT * 2 + 17) };
    let t = 1_700_000_000_000_000;
    w.open(1, { ip: '10.1.0.3', port: 41000 }, { ip: '10.1.0.2', port: 8080 }, (t += 10));
    w.open(2, { ip: '10.1.0.4', port: 52000 }, { ip: '10.2.0.9', port: 80 }, (t += 10));
    const sent = { a: { c2s: 0, s2c: 0 }, b: { c2s: 0, s2c: 0 } };
    // Interleave chunks of both streams and both directions, some above one packet's payload.
    const step = (id: 1 | 2, dir: 'c2s' | 's2c', n: number) => {
      const k = id === 1 ? 'a' : 'b';
      const src = dir === 'c2s' ? (id === 1 ? a.up : b.up) : id === 1 ? a.down : b.down;
      const off = sent[k][dir];
      if (off >= src.length) return;
      const part = src.subarray(off, off + n);
      w.data(id, dir, off, part, (t += 5));
      sent[k][dir] += part.length;
    };
    while (sent.a.c2s < a.up.length || sent.a.s2c < a.down.length || sent.b.c2s < b.up.length || sent.b.s2c < b.down.length) {
      step(1, 'c2s', 70_000);
      step(2, 'c2s', 10);
      step(1, 's2c', 33_333);
      step(2, 's2c', 100_000);
    }
    w.end(1, 'c2s', a.up.length, (t += 5));
    w.end(2, 's2c', b.down.length, (t += 5));
    w.end(1, 's2c', a.down.length, (t += 5));
    w.end(2, 'c2s', b.up.length, (t += 5));
    w.close(1, (t += 5));
    w.close(2, (t += 5));
    w.closeFile();

    const s0 = follow(file, 0);
    expect(s0.nodes).toEqual(['10.1.0.3:41000', '10.1.0.2:8080']);
    expect(sha(s0.c2s)).toBe(sha(a.up));
    expect(sha(s0.s2c)).toBe(sha(a.down));
    const s1 = follow(file, 1);
    expect(s1.nodes).toEqual(['10.1.0.4:52000', '10.2.0.9:80']);
    expect(s1.c2s.equals(b.up)).toBe(true);
    expect(sha(s1.s2c)).toBe(sha(b.down));

    // Checksums validated, and TCP analysis finds no lost, retransmitted or out-of-order segment.
    const fields = execFileSync(
      'tshark',
      ['-r', file, '-o', 'ip.check_checksum:TRUE', '-o', 'tcp.check_checksum:TRUE', '-T', 'fields', '-e', 'ip.checksum.status', '-e', 'tcp.checksum.status', '-e', 'tcp.analysis.flags', '-e', 'frame.len'],
      { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] },
    )
      .trim()
      .split('\n')
      .map((l) => l.split('\t'));
    expect(fields.length).toBeGreaterThan(20);
    expect(fields.every(([ip, tcp]) => ip === '1' && tcp === '1')).toBe(true); // 1: good (0 bad, 2 unverified)
    expect(fields.filter(([, , flags]) => flags)).toEqual([]);
    expect(Math.max(...fields.map((f) => Number(f[3])))).toBeLessThanOrEqual(65_535 + 14);
  });

  it('is a valid pcap after every packet: a file cut at any moment reads back', () => {
    const file = join(dir, 'cut.pcap');
    const w = new PcapWriter(file);
    w.open(1, { ip: '10.0.0.1', port: 1 }, { ip: '10.0.0.2', port: 2 }, 1_700_000_000_000_000);
    w.data(1, 'c2s', 0, Buffer.from('hello'), 1_700_000_000_000_100);
    // Not closed: what a reader sees while the capture still runs.
    const r = spawnSync('tshark', ['-r', file, '-T', 'fields', '-e', 'tcp.len'], { encoding: 'utf8' });
    expect(r.status).toBe(0);
    expect(r.stdout.trim().split('\n')).toEqual(['0', '0', '0', '5']);
    expect(readFileSync(file).length).toBe(24 + 4 * (16 + 54) + 5);
    w.closeFile();
  });
});
