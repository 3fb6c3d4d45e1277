// The agent's admin credential: a random token in the agent's state directory (0600, so root on
// the node reads it), required for plaintext capture from anyone, and for any capture from a
// peer that is not loopback.
import { randomBytes, timingSafeEqual } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { UsageError } from '../errors.js';
import { writeFileAtomic } from '../files.js';

/** Reads the token file, or writes a fresh one (mode 0600). An agent beside this one shares it. */
export function loadOrCreateAdminToken(file: string): string {
  if (existsSync(file)) {
    const t = readFileSync(file, 'utf8').trim();
    if (t.length >= 16) return t;
  }
  const token = randomBytes(32).toString('base64url');
  writeFileAtomic(file, token + '\n', { mode: 0o600 });
  return token;
}

/** Reads a token file for a client (the CLI); throws naming the file and the fix. */
export function readAdminToken(file: string): string {
  try {
    const t = readFileSync(file, 'utf8').trim();
    if (t.length >= 16) return t;
  } catch (err) {
    throw new UsageError(`cannot read the agent's admin token ${file} (${(err as { code?: string }).code ?? (err as Error).message}); run as root on the node, or pass --token-file`, { cause: err });
  }
  throw new UsageError(`the agent's admin token ${file} is empty or too short; restart the agent to have it written`);
}

/** Whether a peer address is loopback (127/8, ::1, or 127/8 mapped into IPv6). */
export function isLoopback(address: string | undefined): boolean {
  if (!address) return false;
  return address === '::1' || /^(::ffff:)?127\./.test(address);
}

/** The token of an `authorization: Bearer <token>` value, or undefined. */
export function bearer(value: unknown): string | undefined {
  return typeof value === 'string' ? /^Bearer\s+(\S+)$/i.exec(value)?.[1] : undefined;
}

function same(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

export interface CaptureCaller {
  peer: string | undefined;
  /** What came in `authorization: Bearer …`, if anything. */
  token: string | undefined;
  pcap: boolean;
}

/**
 * Who may capture what: plaintext needs the admin token from anyone (it is the content of
 * mTLS traffic); records alone need it only from a peer that is not loopback.
 */
export function mayCapture(c: CaptureCaller, adminToken: string): { ok: true; tokenValid: boolean } | { ok: false; why: string } {
  const tokenValid = c.token !== undefined && same(c.token, adminToken);
  if (c.token !== undefined && !tokenValid) return { ok: false, why: 'the bearer token is not this agent\'s admin token' };
  if (c.pcap && !tokenValid) return { ok: false, why: 'plaintext capture (pcap=1) needs "authorization: Bearer <admin token>" (the admin-token file in the agent\'s state directory)' };
  if (!tokenValid && !isLoopback(c.peer)) return { ok: false, why: 'capture from a non-loopback peer needs "authorization: Bearer <admin token>"' };
  return { ok: true, tokenValid };
}
