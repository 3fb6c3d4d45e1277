// The echo backend's WebSocket endpoint (`/ws`, RFC 6455): after the handshake it greets with one
// text message saying which pod answered, then echoes every text or binary message, answers ping
// with pong and a close with a close, so tests can check both directions through the proxies.
import { createHash } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';

/** RFC 6455 §1.3: the GUID the server appends to Sec-WebSocket-Key before hashing. */
const GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';
/** A message above this is refused with 1009: it bounds what one connection holds. */
const MAX_MESSAGE = 16 << 20;

/** The Sec-WebSocket-Accept value for a Sec-WebSocket-Key (RFC 6455 §4.2.2). */
export function websocketAccept(key: string): string {
  return createHash('sha1').update(key + GUID).digest('base64');
}

/** Whether a request asks for a WebSocket (any path: one not to /ws is refused, not echoed as HTTP). */
export function isWebSocketUpgrade(req: IncomingMessage): boolean {
  return req.headers.upgrade?.toLowerCase() === 'websocket';
}

/** One frame, unmasked (a server never masks, §5.1). */
export function wsFrame(opcode: number, payload: Buffer, fin = true): Buffer {
  const n = payload.length;
  const head = n < 126 ? Buffer.alloc(2) : n < 65536 ? Buffer.alloc(4) : Buffer.alloc(10);
  head[0] = (fin ? 0x80 : 0) | opcode;
  if (n < 126) head[1] = n;
  else if (n < 65536) {
    head[1] = 126;
    head.writeUInt16BE(n, 2);
  } else {
    head[1] = 127;
    head.writeBigUInt64BE(BigInt(n), 2);
  }
  return Buffer.concat([head, payload]);
}

/**
 * Takes over `socket` for an upgrade request to /ws: answers the handshake (or 400 when it is
 * not a WebSocket one) and runs the echo. `hello` is the greeting's JSON.
 */
export function serveWebSocket(req: IncomingMessage, socket: Duplex, head: Buffer, hello: Record<string, unknown>): void {
  socket.on('error', () => {});
  const key = req.headers['sec-websocket-key'];
  const isWs = isWebSocketUpgrade(req) && typeof key === 'string' && req.headers['sec-websocket-version'] === '13';
  if (!isWs || new URL(req.url ?? '/', 'http://x').pathname !== '/ws') {
    socket.end('HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: 35\r\nConnection: close\r\n\r\nWebSocket upgrade only on /ws (v13)');
    return;
  }
  socket.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${websocketAccept(key)}\r\n\r\n`);
  socket.write(wsFrame(0x1, Buffer.from(JSON.stringify(hello))));

  let buf = head;
  let parts: Buffer[] = [];
  let partBytes = 0;
  let opcodeOfMessage = 0;
  let closed = false;
  const close = (code: number, reason = ''): void => {
    if (closed) return;
    closed = true;
    const p = Buffer.alloc(2 + Buffer.byteLength(reason));
    p.writeUInt16BE(code, 0);
    p.write(reason, 2);
    socket.end(wsFrame(0x8, p));
  };
  const onData = (d: Buffer): void => {
    buf = buf.length ? Buffer.concat([buf, d]) : d;
    while (!closed && buf.length >= 2) {
      const fin = (buf[0]! & 0x80) !== 0;
      const opcode = buf[0]! & 0x0f;
      const masked = (buf[1]! & 0x80) !== 0;
      let len = buf[1]! & 0x7f;
      let at = 2;
      if (len === 126) {
        if (buf.length < 4) return;
        len = buf.readUInt16BE(2);
        at = 4;
      } else if (len === 127) {
        if (buf.length < 10) return;
        const big = buf.readBigUInt64BE(2);
        if (big > BigInt(MAX_MESSAGE)) return close(1009, 'message too big');
        len = Number(big);
        at = 10;
      }
      // §5.1: a client frame that is not masked fails the connection.
      if (!masked) return close(1002, 'client frames must be masked');
      if (buf.length < at + 4 + len) return;
      const mask = buf.subarray(at, at + 4);
      const payload = Buffer.from(buf.subarray(at + 4, at + 4 + len));
      for (let i = 0; i < payload.length; i++) payload[i]! ^= mask[i & 3]!;
      buf = buf.subarray(at + 4 + len);
      if (opcode === 0x8) return close(payload.length >= 2 ? payload.readUInt16BE(0) : 1000);
      if (opcode === 0x9) socket.write(wsFrame(0xa, payload));
      else if (opcode === 0xa) continue;
      else if (opcode === 0x1 || opcode === 0x2 || opcode === 0x0) {
        if (opcode !== 0x0) opcodeOfMessage = opcode;
        parts.push(payload);
        partBytes += payload.length;
        if (partBytes > MAX_MESSAGE) return close(1009, 'message too big');
        if (fin) {
          socket.write(wsFrame(opcodeOfMessage, Buffer.concat(parts)));
          parts = [];
          partBytes = 0;
        }
      } else return close(1002, `opcode ${opcode}`);
    }
  };
  socket.on('data', onData);
  // The peer went away without a close frame: nothing is owed to it (1006 is never sent, §7.4.1).
  socket.on('end', () => {
    closed = true;
    socket.end();
  });
  if (head.length) onData(Buffer.alloc(0));
}
