// Per-node credentials: a token bound to one node name and that node's pod CIDRs, signed with
// an HMAC key (the node secret) that only the control plane and whoever mints tokens hold, so
// the control plane proves the caller's node from the token alone, with no database.
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { IdentityError, UsageError } from '../errors.js';
import { writeFileAtomic } from '../files.js';
import { formatCidr, parseCidr, type Cidr } from '../net/index.js';

/** Version tag and first part of every node token: `nmnode1.<payload>.<mac>`. */
export const NODE_TOKEN_PREFIX = 'nmnode1';

/** A Kubernetes node name: a lowercase DNS subdomain. */
const NODE_NAME = /^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/;

/** Shortest node secret accepted: 32 characters (a 32-byte base64 secret has 44). */
const MIN_SECRET = 32;

/** Who a caller proved to be. */
export interface NodeCaller {
  node: string;
  /** The node's pod CIDRs, as its credential states them: a reported pod IP must be inside one. */
  podCidrs: Cidr[];
  /** On Kubernetes: the agent's own pod (`namespace/name`), which its ServiceAccount token is bound to. */
  agentPod?: string;
}

export interface NodeTokenClaims {
  node: string;
  /** e.g. `['10.244.1.0/24']`; `0.0.0.0/0` (and `::/0`) accepts any IP; empty accepts none. */
  podCidrs: string[];
}

export function nodeNameProblem(node: string): string | undefined {
  return NODE_NAME.test(node) ? undefined : `node name ${JSON.stringify(node)} is not a lowercase DNS name (a-z, 0-9, '-', '.')`;
}

function checkSecret(secret: string, file: string): string {
  if (secret.length < MIN_SECRET) {
    throw new IdentityError('NM_ERR_AUTH', `the node secret ${file} is shorter than ${MIN_SECRET} characters; make one with \`head -c 32 /dev/urandom | base64\``);
  }
  return secret;
}

/** Reads a node secret file (trimmed); throws when it is missing or too short. */
export function readNodeSecret(file: string): string {
  if (!existsSync(file)) {
    throw new UsageError(`no node secret at ${file}; the control plane writes one at its first start (in its --state-dir), or give --node-secret <file>`);
  }
  return checkSecret(readFileSync(file, 'utf8').trim(), file);
}

/** Reads the node secret, or creates the file with 32 random bytes (base64url, mode 0600). */
export function loadOrCreateNodeSecret(file: string): string {
  if (existsSync(file)) return readNodeSecret(file);
  const secret = randomBytes(32).toString('base64url');
  writeFileAtomic(file, secret + '\n', { mode: 0o600 });
  return secret;
}

function mac(secret: string, payload: string): Buffer {
  return createHmac('sha256', secret).update(`${NODE_TOKEN_PREFIX}.${payload}`).digest();
}

/** Mints the token of one node. Throws UsageError for a bad node name or CIDR. */
export function mintNodeToken(secret: string, claims: NodeTokenClaims): string {
  const why = nodeNameProblem(claims.node);
  if (why) throw new UsageError(why);
  const podCidrs = claims.podCidrs.map((c) => {
    try {
      return formatCidr(parseCidr(c.includes('/') ? c : `${c}/${c.includes(':') ? 128 : 32}`));
    } catch (e) {
      throw new UsageError(`pod CIDR ${JSON.stringify(c)}: ${(e as Error).message}`);
    }
  });
  const payload = Buffer.from(JSON.stringify({ node: claims.node, podCidrs })).toString('base64url');
  return `${NODE_TOKEN_PREFIX}.${payload}.${mac(secret, payload).toString('base64url')}`;
}

/**
 * Verifies a node token and returns who it proves, or `{ refused }` saying why it proves
 * nothing (a wrong signature, a token made with another secret, malformed claims).
 */
export function verifyNodeToken(secret: string, token: string): NodeCaller | { refused: string } {
  const parts = token.split('.');
  if (parts.length !== 3 || parts[0] !== NODE_TOKEN_PREFIX) return { refused: `the credential is not a node token (${NODE_TOKEN_PREFIX}.…); mint one with \`nodemesh control-plane node-token --node <name>\`` };
  const [, payload, sig] = parts as [string, string, string];
  const want = mac(secret, payload);
  const got = Buffer.from(sig, 'base64url');
  if (got.length !== want.length || !timingSafeEqual(got, want)) return { refused: 'the node token is not signed by this control plane\'s node secret' };
  let claims: unknown;
  try {
    claims = JSON.parse(Buffer.from(payload, 'base64url').toString('utf8'));
  } catch {
    return { refused: 'the node token carries no readable claims' };
  }
  const c = claims as Partial<NodeTokenClaims>;
  if (typeof c.node !== 'string' || nodeNameProblem(c.node) || !Array.isArray(c.podCidrs) || !c.podCidrs.every((x) => typeof x === 'string')) {
    return { refused: 'the node token\'s claims are malformed' };
  }
  try {
    return { node: c.node, podCidrs: c.podCidrs.map((x) => parseCidr(x)) };
  } catch {
    return { refused: 'the node token names a malformed pod CIDR' };
  }
}
