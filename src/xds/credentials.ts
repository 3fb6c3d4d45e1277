// How a node agent reaches the control plane: TLS verified against the mesh root, plus the
// bootstrap token and the node name in the metadata of every call.
import { readFileSync } from 'node:fs';
import * as grpc from '@grpc/grpc-js';

export const NODE_HEADER = 'x-nodemesh-node';

export interface ControlPlaneConnection {
  /** `host:port` of the control plane's gRPC listener, e.g. `127.0.0.1:15012`. */
  address: string;
  /** PEM of the mesh root that signed the control plane's serving certificate. */
  rootCertPem: string | Buffer;
  /** The bootstrap token; a function is called for every call (so a rotated file is re-read). */
  token: string | (() => string);
  /** This node's name, as pods name it in spec.nodeName. */
  nodeName: string;
  /** Overrides the name verified against the server certificate (default: the host of `address`). */
  serverName?: string;
}

/** Reads a token file, trimming the trailing newline. */
export function readTokenFile(path: string): () => string {
  return () => readFileSync(path, 'utf8').trim();
}

export function channelCredentials(c: ControlPlaneConnection): grpc.ChannelCredentials {
  return grpc.credentials.createSsl(Buffer.from(c.rootCertPem));
}

export function channelOptions(c: ControlPlaneConnection): grpc.ChannelOptions {
  return {
    ...(c.serverName ? { 'grpc.ssl_target_name_override': c.serverName, 'grpc.default_authority': c.serverName } : {}),
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
