// A pcap writer for the plaintext of proxied connections: each stream gets synthesized
// Ethernet/IPv4/TCP framing (handshake, data segments with their real sequence and ack numbers
// both ways, FINs, checksums), written one whole packet per write so the file is valid at every
// moment and a Ctrl-C loses nothing already written.
import { closeSync, openSync, writeSync } from 'node:fs';

/** Ethernet (1); microsecond timestamps. */
const LINKTYPE_ETHERNET = 1;
const SNAPLEN = 262_144;
/** The largest payload an IPv4 packet of 65535 bytes can carry over TCP with no options. */
export const MAX_SEGMENT = 65_535 - 20 - 20;

const FIN = 0x01;
const SYN = 0x02;
const PSH = 0x08;
const ACK = 0x10;

function ipv4(ip: string): Buffer {
  const parts = ip.replace(/^::ffff:/, '').split('.').map(Number);
  if (parts.length !== 4 || parts.some((p) => !Number.isInteger(p) || p < 0 || p > 255)) return Buffer.alloc(4);
  return Buffer.from(parts);
}

/** The Internet checksum (RFC 1071) of one or more buffers, taken as one byte stream. */
export function inetChecksum(bufs: Buffer[]): number {
  let sum = 0;
  let odd: number | undefined;
  for (const b of bufs) {
    let i = 0;
    if (odd !== undefined && b.length > 0) {
      sum += (odd << 8) | b[0]!;
      odd = undefined;
      i = 1;
    }
    for (; i + 1 < b.length; i += 2) sum += (b[i]! << 8) | b[i + 1]!;
    if (i < b.length) odd = b[i]!;
    // Fold often enough that the sum stays an exact integer.
    sum = (sum & 0xffff) + Math.floor(sum / 0x10000);
  }
  if (odd !== undefined) sum += odd << 8;
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

interface Side {
  ip: Buffer;
  port: number;
  mac: Buffer;
  isn: number;
  /** Payload bytes sent so far, plus 1 after a FIN. */
  sent: number;
  fin: boolean;
}

interface Stream {
  c: Side;
  s: Side;
  /** The side whose FIN came last: the other one sends the final ACK. */
  lastFin?: Side;
}

function mac(last: number): Buffer {
  return Buffer.from([0x02, 0x00, 0x00, 0x00, 0x00, last & 0xff]);
}

export class PcapWriter {
  readonly #fd: number;
  readonly #streams = new Map<number, Stream>();
  #closed = false;
  packets = 0;

  constructor(path: string) {
    this.#fd = openSync(path, 'w', 0o600);
    const h = Buffer.alloc(24);
    h.writeUInt32LE(0xa1b2c3d4, 0);
    h.writeUInt16LE(2, 4);
    h.writeUInt16LE(4, 6);
    h.writeInt32LE(0, 8);
    h.writeUInt32LE(0, 12);
    h.writeUInt32LE(SNAPLEN, 16);
    h.writeUInt32LE(LINKTYPE_ETHERNET, 20);
    writeSync(this.#fd, h);
  }

  /** A new stream: writes its three-way handshake at time `tUs` (µs since the epoch). */
  open(conn: number, src: { ip: string; port: number }, dst: { ip: string; port: number }, tUs: number): void {
    const isn = (n: number) => (Math.imul(conn, 2654435761) + n) >>> 0;
    const st: Stream = {
      c: { ip: ipv4(src.ip), port: src.port, mac: mac(1), isn: isn(0x1000), sent: 0, fin: false },
      s: { ip: ipv4(dst.ip), port: dst.port, mac: mac(2), isn: isn(0x7000_0000), sent: 0, fin: false },
    };
    this.#streams.set(conn, st);
    this.#segment(st.c, st.s, SYN, st.c.isn, 0, Buffer.alloc(0), tUs);
    this.#segment(st.s, st.c, SYN | ACK, st.s.isn, (st.c.isn + 1) >>> 0, Buffer.alloc(0), tUs);
    this.#segment(st.c, st.s, ACK, (st.c.isn + 1) >>> 0, (st.s.isn + 1) >>> 0, Buffer.alloc(0), tUs);
  }

  /**
   * Payload of one direction at byte offset `seq` of that direction (offsets skip bytes the
   * capture lost, so the sequence numbers stay the connection's own).
   */
  data(conn: number, dir: 'c2s' | 's2c', seq: number, bytes: Buffer, tUs: number): void {
    const st = this.#streams.get(conn);
    if (!st) return;
    const [from, to] = dir === 'c2s' ? [st.c, st.s] : [st.s, st.c];
    for (let off = 0; off < bytes.length; off += MAX_SEGMENT) {
      const part = bytes.subarray(off, off + MAX_SEGMENT);
      this.#segment(from, to, ACK | PSH, (from.isn + 1 + seq + off) >>> 0, this.#ackOf(to), part, tUs);
    }
    from.sent = Math.max(from.sent, seq + bytes.length);
  }

  /** A FIN from one side after `seq` bytes. */
  end(conn: number, dir: 'c2s' | 's2c', seq: number, tUs: number): void {
    const st = this.#streams.get(conn);
    if (!st) return;
    const [from, to] = dir === 'c2s' ? [st.c, st.s] : [st.s, st.c];
    if (from.fin) return;
    from.sent = Math.max(from.sent, seq);
    this.#segment(from, to, FIN | ACK, (from.isn + 1 + from.sent) >>> 0, this.#ackOf(to), Buffer.alloc(0), tUs);
    from.fin = true;
    st.lastFin = from;
  }

  /** The stream is over: its last ACK, and it is forgotten. */
  close(conn: number, tUs: number): void {
    const st = this.#streams.get(conn);
    if (!st) return;
    const finner = st.lastFin;
    if (finner) {
      const acker = finner === st.c ? st.s : st.c;
      this.#segment(acker, finner, ACK, this.#ackOf(acker), this.#ackOf(finner), Buffer.alloc(0), tUs);
    }
    this.#streams.delete(conn);
  }

  #ackOf(peer: Side): number {
    return (peer.isn + 1 + peer.sent + (peer.fin ? 1 : 0)) >>> 0;
  }

  #segment(from: Side, to: Side, flags: number, seq: number, ack: number, payload: Buffer, tUs: number): void {
    if (this.#closed) return;
    const tcp = Buffer.alloc(20);
    tcp.writeUInt16BE(from.port, 0);
    tcp.writeUInt16BE(to.port, 2);
    tcp.writeUInt32BE(seq, 4);
    tcp.writeUInt32BE(flags & ACK ? ack : 0, 8);
    tcp[12] = 5 << 4;
    tcp[13] = flags;
    tcp.writeUInt16BE(65535, 14);
    const pseudo = Buffer.alloc(12);
    from.ip.copy(pseudo, 0);
    to.ip.copy(pseudo, 4);
    pseudo[9] = 6;
    pseudo.writeUInt16BE(20 + payload.length, 10);
    tcp.writeUInt16BE(inetChecksum([pseudo, tcp, payload]), 16);
    const ip = Buffer.alloc(20);
    ip[0] = 0x45;
    ip.writeUInt16BE(20 + 20 + payload.length, 2);
    ip.writeUInt16BE(0x4000, 6); // don't fragment
    ip[8] = 64;
    ip[9] = 6;
    from.ip.copy(ip, 12);
    to.ip.copy(ip, 16);
    ip.writeUInt16BE(inetChecksum([ip]), 10);
    const eth = Buffer.alloc(14);
    to.mac.copy(eth, 0);
    from.mac.copy(eth, 6);
    eth.writeUInt16BE(0x0800, 12);
    const len = 14 + 20 + 20 + payload.length;
    const rec = Buffer.alloc(16);
    rec.writeUInt32LE(Math.floor(tUs / 1e6), 0);
    rec.writeUInt32LE(tUs % 1e6, 4);
    rec.writeUInt32LE(len, 8);
    rec.writeUInt32LE(len, 12);
    // One write per packet: the file ends on a whole packet whenever it is read or cut short.
    writeSync(this.#fd, Buffer.concat([rec, eth, ip, tcp, payload]));
    this.packets++;
  }

  closeFile(): void {
    if (this.#closed) return;
    this.#closed = true;
    closeSync(this.#fd);
  }
}
