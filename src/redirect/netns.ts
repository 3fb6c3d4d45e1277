// Sockets inside a pod's network namespace, made by the addon on a dedicated thread
// (setns → socket → setns back), and the netns facts the redirection keys its maps by.
import { nativeFailure, native } from './native.js';
import { assertAbsolutePath, assertFd, assertIP, assertInteger, assertPort } from './validate.js';
import type { ListenOptions, NetnsSocketOptions } from './types.js';

/**
 * A listening TCP socket created inside the netns at netnsPath, returned as an fd for
 * `net.createServer().listen({ fd })`. SO_REUSEADDR is always set; SO_REUSEPORT on request,
 * so several workers can each hold one (sk_lookup honours reuseport groups).
 */
export async function listenInNetns(netnsPath: string, options: ListenOptions): Promise<number> {
  assertAbsolutePath(netnsPath, 'netnsPath');
  if (options === null || typeof options !== 'object') throw new TypeError('options must be an object');
  assertIP(options.host, 'options.host');
  assertPort(options.port, 'options.port', true);
  const backlog = options.backlog ?? 511;
  assertInteger(backlog, 'options.backlog', 0, 65535);
  if (options.reusePort !== undefined && typeof options.reusePort !== 'boolean') {
    throw new TypeError('options.reusePort must be a boolean');
  }
  try {
    return await native().listenInNetns(netnsPath, options.host, options.port, backlog, options.reusePort ?? false);
  } catch (err) {
    throw nativeFailure('NM_ERR_NATIVE', `listening on ${options.host}:${options.port} in ${netnsPath}`, err);
  }
}

/**
 * An unconnected, non-blocking TCP socket created inside the netns at netnsPath (optionally
 * bound to bindIp), for `new net.Socket({ fd }).connect(port, host)`. A socket keeps the
 * netns it was made in, so no setns is needed at connect time.
 */
export async function socketInNetns(netnsPath: string, options: NetnsSocketOptions = {}): Promise<number> {
  assertAbsolutePath(netnsPath, 'netnsPath');
  if (options.bindIp !== undefined) assertIP(options.bindIp, 'options.bindIp');
  const family = options.family ?? 4;
  if (family !== 4 && family !== 6) throw new TypeError(`options.family must be 4 or 6, got ${String(family)}`);
  try {
    return await native().socketInNetns(netnsPath, options.bindIp ?? null, family);
  } catch (err) {
    throw nativeFailure('NM_ERR_NATIVE', `creating a socket in ${netnsPath}`, err);
  }
}

/**
 * `count` sockets like socketInNetns's, made in one visit to the netns: the thread and the two
 * setns calls cost far more than a socket, so a connection pool refills in batches.
 */
export async function socketsInNetns(netnsPath: string, count: number, options: NetnsSocketOptions = {}): Promise<number[]> {
  assertAbsolutePath(netnsPath, 'netnsPath');
  assertInteger(count, 'count', 1, 1024);
  if (options.bindIp !== undefined) assertIP(options.bindIp, 'options.bindIp');
  const family = options.family ?? 4;
  if (family !== 4 && family !== 6) throw new TypeError(`options.family must be 4 or 6, got ${String(family)}`);
  try {
    return await native().socketsInNetns(netnsPath, options.bindIp ?? null, family, count);
  } catch (err) {
    throw nativeFailure('NM_ERR_NATIVE', `creating ${count} sockets in ${netnsPath}`, err);
  }
}

/** The cookie of the netns a socket lives in (SO_NETNS_COOKIE). */
export function netnsCookie(fd: number): bigint {
  assertFd(fd);
  try {
    return native().netnsCookie(fd);
  } catch (err) {
    throw nativeFailure('NM_ERR_NATIVE', `reading SO_NETNS_COOKIE of fd ${fd}`, err);
  }
}

/** The cookie of the netns at netnsPath (from a throwaway socket made there). */
export async function netnsCookieOfPath(netnsPath: string): Promise<bigint> {
  assertAbsolutePath(netnsPath, 'netnsPath');
  try {
    return await native().netnsCookieOfPath(netnsPath);
  } catch (err) {
    throw nativeFailure('NM_ERR_NATIVE', `reading the netns cookie of ${netnsPath}`, err);
  }
}

/** The socket's cookie (SO_COOKIE), as BPF programs and SOCKHASH lookups report it. */
export function socketCookie(fd: number): bigint {
  assertFd(fd);
  try {
    return native().socketCookie(fd);
  } catch (err) {
    throw nativeFailure('NM_ERR_NATIVE', `reading SO_COOKIE of fd ${fd}`, err);
  }
}
