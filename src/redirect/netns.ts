// Sockets inside a pod's network namespace, made by the addon on a dedicated thread
// (setns → socket → setns back), the in-pod routing of inbound delivery, and the netns facts
// the redirection keys its maps by.
import { existsSync } from 'node:fs';
import { nativeFailure, native } from './native.js';
import { assertAbsolutePath, assertFd, assertIP, assertInteger, assertPort } from './validate.js';
import { INBOUND_DELIVERY, type DeliveryRoutingInstalled, type ListenOptions, type NetnsSocketOptions } from './types.js';

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
 * setns calls cost far more than a socket, so a connection pool refills in batches. With
 * `transparent`, delivery sockets (see NetnsSocketOptions.transparent).
 */
export async function socketsInNetns(netnsPath: string, count: number, options: NetnsSocketOptions = {}): Promise<number[]> {
  assertAbsolutePath(netnsPath, 'netnsPath');
  assertInteger(count, 'count', 1, 1024);
  if (options.bindIp !== undefined) assertIP(options.bindIp, 'options.bindIp');
  const family = options.family ?? 4;
  if (family !== 4 && family !== 6) throw new TypeError(`options.family must be 4 or 6, got ${String(family)}`);
  if (options.transparent !== undefined && typeof options.transparent !== 'boolean') {
    throw new TypeError('options.transparent must be a boolean');
  }
  if (options.transparent && (options.bindIp !== undefined || family !== 4)) {
    throw new TypeError('delivery sockets (options.transparent) are IPv4 and bound at connect time: leave bindIp and family unset');
  }
  const mark = options.transparent ? INBOUND_DELIVERY.mark : null;
  try {
    return await native().socketsInNetns(netnsPath, options.bindIp ?? null, family, count, mark);
  } catch (err) {
    throw nativeFailure('NM_ERR_NATIVE', `creating ${count} ${options.transparent ? 'delivery ' : ''}sockets in ${netnsPath}`, err);
  }
}

/**
 * Installs, inside the netns at netnsPath, what inbound delivery with the client's address
 * needs: `ip rule add fwmark 0x539/0xfff lookup 100 pref 32764`, `ip route replace local
 * 0.0.0.0/0 dev lo table 100`, and net.ipv4.tcp_fwmark_accept = net.ipv4.fwmark_reflect = 1
 * (both per netns). Idempotent: an identical rule is not added twice.
 */
export async function installDeliveryRouting(netnsPath: string): Promise<DeliveryRoutingInstalled> {
  assertAbsolutePath(netnsPath, 'netnsPath');
  const d = INBOUND_DELIVERY;
  try {
    const r = await native().installDeliveryRouting(netnsPath, d.mark, d.mask, d.table, d.rulePriority);
    return { ruleAdded: r.ruleAdded, previous: { fwmarkAccept: r.previousFwmarkAccept, fwmarkReflect: r.previousFwmarkReflect } };
  } catch (err) {
    throw nativeFailure('NM_ERR_NATIVE', `installing the inbound delivery routing in ${netnsPath}`, err);
  }
}

/**
 * Removes exactly the rule and route installDeliveryRouting adds (their absence is fine) and
 * writes the two sysctls back to `restore` (a field left out is left as it is). A netns that
 * no longer exists has nothing left to remove: that answers false for both.
 */
export async function removeDeliveryRouting(
  netnsPath: string,
  restore: { fwmarkAccept?: number; fwmarkReflect?: number } = {},
): Promise<{ ruleRemoved: boolean; routeRemoved: boolean }> {
  assertAbsolutePath(netnsPath, 'netnsPath');
  if (restore.fwmarkAccept !== undefined) assertInteger(restore.fwmarkAccept, 'restore.fwmarkAccept', 0, 1);
  if (restore.fwmarkReflect !== undefined) assertInteger(restore.fwmarkReflect, 'restore.fwmarkReflect', 0, 1);
  const d = INBOUND_DELIVERY;
  try {
    return await native().removeDeliveryRouting(netnsPath, d.mark, d.mask, d.table, d.rulePriority, restore.fwmarkAccept ?? -1, restore.fwmarkReflect ?? -1);
  } catch (err) {
    // The pod's netns is gone (pod deleted): its rule and route went with it.
    if (!existsSync(netnsPath)) return { ruleRemoved: false, routeRemoved: false };
    throw nativeFailure('NM_ERR_NATIVE', `removing the inbound delivery routing in ${netnsPath}`, err);
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
