// How a node agent reaches the control plane: TLS verified against the mesh root, plus the
// node's own token (which proves the node) and the node name in the metadata of every call.
// The control plane takes the node from the token; a name that differs is refused.
import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import * as grpc from '@grpc/grpc-js';

export const NODE_HEADER = 'x-nodemesh-node';

/**
 * A DNS name every control-plane serving certificate carries. Agents dialing the control plane
 * by IP verify this name instead: TLS SNI may not carry an IP (RFC 6066 §3), and Node warns
 * (DEP0123) when asked to send one.
 */
export const CONTROL_PLANE_DNS_NAME = 'nodemesh-control-plane.nodemesh-system.svc';

export interface ControlPlaneConnection {
  /** `host:port` of the control plane's gRPC listener, e.g. `127.0.0.1:15012`. */
  address: string;
  /** PEM of the mesh root that signed the control plane's serving certificate. */
  rootCertPem: string | Buffer;
  /** This node's token (`nodemesh control-plane node-token`); a function is called for every call (so a rotated file is re-read). */
  token: string | (() => string);
  /** This node's name, as pods name it in spec.nodeName. */
  nodeName: string;
  /** Overrides the name verified against the server certificate (default: the host of `address`). */
  serverName?: string;
}

/**
 * Reads a token file, trimming the trailing newline, again at every call: a node token, or on
 * Kubernetes the pod's projected ServiceAccount token, which kubelet rotates in place. A read
 * that fails or finds the file empty after a good one gives the last good token (the control
 * plane judges it), so a file caught mid-rotation never throws out of a reconnect timer.
 */
export function readTokenFile(path: string): () => string {
  let last: string | undefined;
  return () => {
    let token: string | undefined;
    try {
      token = readFileSync(path, 'utf8').trim();
    } catch (err) {
      if (last === undefined) throw err;
    }
    if (token) last = token;
    else if (last === undefined) throw new Error(`the token file ${path} is empty`);
    return last;
  };
}

export function channelCredentials(c: ControlPlaneConnection): grpc.ChannelCredentials {
  return grpc.credentials.createSsl(Buffer.from(c.rootCertPem));
}

/** The name verified against the serving certificate: serverName, or for an IP address the fixed DNS name. */
function verifiedName(c: ControlPlaneConnection): string | undefined {
  if (c.serverName) return c.serverName;
  const host = /^\[(.*)\](?::\d+)?$/.exec(c.address)?.[1] ?? c.address.replace(/:\d+$/, '');
  return isIP(host) ? CONTROL_PLANE_DNS_NAME : undefined;
}

export function channelOptions(c: ControlPlaneConnection): grpc.ChannelOptions {
  const name = verifiedName(c);
  return {
    ...(name ? { 'grpc.ssl_target_name_override': name, 'grpc.default_authority': name } : {}),
    // Find a dead control plane (or a silently dropped connection) within a minute.
    'grpc.keepalive_time_ms': 30_000,
    'grpc.keepalive_timeout_ms': 10_000,
    'grpc.keepalive_permit_without_calls': 1,
  };
}

export function authMetadata(c: ControlPlaneConnection): grpc.Metadata {
  const md = new grpc.Metadata();
  const token = typeof c.token === 'function' ? c.token() : c.token;
  md.set('authorization', `Bearer ${token}`);
  md.set(NODE_HEADER, c.nodeName);
  return md;
}

/** A plain gRPC client for the control plane (the caller closes it). */
export function controlPlaneClient(c: ControlPlaneConnection): grpc.Client {
  return new grpc.Client(c.address, channelCredentials(c), channelOptions(c));
}
