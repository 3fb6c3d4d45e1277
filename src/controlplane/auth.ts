// Authentication of node agents: a bootstrap token (written 0600 at first start) presented as
// `authorization: Bearer <token>`, plus the caller's node name in `x-nodemesh-node`.
import { randomBytes, timingSafeEqual } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { IdentityError } from '../errors.js';
import { NODE_HEADER } from '../xds/index.js';

/** Reads the token file, or creates it with a fresh random token (mode 0600). */
export function loadOrCreateToken(file: string): string {
  if (existsSync(file)) {
    const t = readFileSync(file, 'utf8').trim();
    if (t.length >= 16) return t;
    throw new IdentityError('NM_ERR_AUTH', `the token file ${file} holds no usable token (at least 16 characters); delete it to have a new one generated`);
  }
  mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
  const token = randomBytes(32).toString('base64url');
  writeFileSync(file, token + '\n', { mode: 0o600 });
  chmodSync(file, 0o600);
  return token;
}

const NODE_NAME = /^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/;

/** An error a gRPC handler can pass to its callback or emit. */
export function grpcError(code: grpc.status, details: string): grpc.ServiceError {
  return Object.assign(new Error(details), { code, details, metadata: new grpc.Metadata() });
}

/**
 * Returns a function that checks a call's metadata and returns the caller's node name, or
 * throws a gRPC UNAUTHENTICATED error saying what is missing.
 */
export function tokenAuthenticator(token: string): (md: grpc.Metadata) => string {
  const want = Buffer.from(token);
  return (md) => {
    const auth = md.get('authorization')[0];
    const m = typeof auth === 'string' ? /^Bearer\s+(\S+)$/i.exec(auth) : null;
    if (!m) throw grpcError(grpc.status.UNAUTHENTICATED, 'missing "authorization: Bearer <token>" metadata; give the agent the control plane token file');
    const got = Buffer.from(m[1]!);
    if (got.length !== want.length || !timingSafeEqual(got, want)) throw grpcError(grpc.status.UNAUTHENTICATED, 'the bootstrap token is not valid; check the token file the agent uses');
    const node = md.get(NODE_HEADER)[0];
    if (typeof node !== 'string' || !NODE_NAME.test(node)) throw grpcError(grpc.status.UNAUTHENTICATED, `missing or invalid ${NODE_HEADER} metadata (the node name)`);
    return node;
  };
}
