// Where the control plane listens: `host:port` parsing, and the names its serving certificate
// carries for that address.
import { networkInterfaces } from 'node:os';
import { UsageError } from '../errors.js';
import { isIp } from '../net/index.js';
import { CONTROL_PLANE_DNS_NAME } from '../xds/index.js';

/** Splits `host:port` / `[v6]:port`. */
export function parseHostPort(s: string, what: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d{1,5})$/.exec(s);
  const port = m ? Number(m[3]) : NaN;
  if (!m || port > 65535) throw new UsageError(`${what} must be host:port (e.g. 127.0.0.1:15012), got ${JSON.stringify(s)}`);
  return { host: (m[1] ?? m[2])!, port };
}

/** The DNS names and IPs of the serving certificate for a listen host (every local address for 0.0.0.0). */
export function servingNames(host: string, extra: string[]): { dns: string[]; ips: string[] } {
  const ips = new Set(['127.0.0.1', '::1']);
  const dns = new Set(['localhost', CONTROL_PLANE_DNS_NAME]);
  if (host === '0.0.0.0' || host === '::') {
    for (const list of Object.values(networkInterfaces())) for (const a of list ?? []) ips.add(a.address.replace(/%.*$/, ''));
  } else if (isIp(host)) ips.add(host);
  else dns.add(host);
  for (const n of extra) (isIp(n) ? ips : dns).add(n);
  return { dns: [...dns], ips: [...ips] };
}
