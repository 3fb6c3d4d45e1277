// Authentication of node agents: each presents its own node token (node-credentials.ts) as
// `authorization: Bearer <token>`, and the control plane takes the caller's node from that
// token alone. The admin token (written 0600 at first start) is for operators (the admin
// endpoint's /debug pages) and is refused here: it proves no node.
import { randomBytes, timingSafeEqual } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import * as grpc from '@grpc/grpc-js';
import { IdentityError } from '../errors.js';
import { writeFileAtomic } from '../files.js';
import { verifyNodeToken, type NodeCaller } from './node-credentials.js';

/** Reads the token file, or creates it with a fresh random token (mode 0600). */
export function loadOrCreateToken(file: string): string {
  if (existsSync(file)) {
    const t = readFileSync(file, 'utf8').trim();
    if (t.length >= 16) return t;
    throw new IdentityError('NM_ERR_AUTH', `the token file ${file} holds no usable token (at least 16 characters); delete it to have a new one generated`);
  }
  const token = randomBytes(32).toString('base64url');
  writeFileAtomic(file, token + '\n', { mode: 0o600 });
  return token;
}

/** Whether two secrets are equal, in constant time for equal lengths. */
export function sameSecret(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

/** The token of an `authorization: Bearer <token>` value, or undefined. */
export function bearerToken(value: unknown): string | undefined {
  return typeof value === 'string' ? /^Bearer\s+(\S+)$/i.exec(value)?.[1] : undefined;
}

/** An error a gRPC handler can pass to its callback or emit. */
export function grpcError(code: grpc.status, details: string): grpc.ServiceError {
  return Object.assign(new Error(details), { code, details, metadata: new grpc.Metadata() });
}

/**
 * Returns a function that checks a call's metadata and returns the node its token proves, or
 * throws a gRPC UNAUTHENTICATED error saying what is wrong.
 */
export function nodeTokenAuthenticator(nodeSecret: string, adminToken: string): (md: grpc.Metadata) => NodeCaller {
  return (md) => {
    const token = bearerToken(md.get('authorization')[0]);
    if (!token) throw grpcError(grpc.status.UNAUTHENTICATED, 'missing "authorization: Bearer <token>" metadata; give the agent its node token file (nodemesh control-plane node-token)');
    if (sameSecret(token, adminToken)) {
      throw grpcError(grpc.status.UNAUTHENTICATED, 'the control plane\'s admin token proves no node; give the agent its own node token (nodemesh control-plane node-token --node <name>)');
    }
    const r = verifyNodeToken(nodeSecret, token);
    if ('refused' in r) throw grpcError(grpc.status.UNAUTHENTICATED, r.refused);
    return r;
  };
}
