// The one gate every control-plane gRPC handler (xDS, CA, pod status) is registered through:
// it authenticates the calling node agent by its credential (a node token, or on Kubernetes
// its pod's ServiceAccount token), takes the caller's node from that credential, and refuses a call the same way for unary calls and streams: UNAUTHENTICATED without
// a valid token, PERMISSION_DENIED when the call claims another node (its x-nodemesh-node
// header or the node a request names). Every refusal is logged with the claimed and the
// proven node.
import * as grpc from '@grpc/grpc-js';
import type { Logger } from '../log.js';
import { NODE_HEADER } from '../xds/index.js';
import { grpcError } from './auth.js';
import type { NodeCaller } from './node-credentials.js';

/**
 * Checks a call's metadata: returns (or resolves to) the node it proves, or throws (rejects
 * with) a gRPC error: UNAUTHENTICATED, or UNAVAILABLE when the proof cannot be checked now.
 */
export type Authenticator = (md: grpc.Metadata) => NodeCaller | Promise<NodeCaller>;

/** What every grpc-js server call has (grpc-js's ServerSurfaceCall, which it does not export). */
export interface SurfaceCall {
  readonly metadata: grpc.Metadata;
  /** The client went away (cancelled, deadline passed) while the call was being authenticated. */
  readonly cancelled: boolean;
  getPeer(): string;
  emit(event: 'error', err: grpc.ServiceError): boolean;
}

/** A grpc-js handler (`call`, then `callback` for unary calls) that is told the proven caller first. */
export type NodeHandler<C extends SurfaceCall, R extends unknown[]> = (caller: NodeCaller, call: C, ...rest: R) => void;

export interface GateOptions<C> {
  /** The call as the refusal's log line names it: "a certificate request". */
  what: string;
  /**
   * When the request names the node it is about (`noun` is what the message calls it): a node
   * other than the caller's is refused with PERMISSION_DENIED.
   */
  claim?: { noun: string; node: (call: C) => string | undefined };
}

/** Wraps a handler that needs the caller's node into the handler grpc-js calls. */
export type NodeGate = <C extends SurfaceCall, R extends unknown[]>(opts: GateOptions<C>, handler: NodeHandler<C, R>) => (call: C, ...rest: R) => void;

function asServiceError(err: unknown): grpc.ServiceError {
  const e = err as Partial<grpc.ServiceError>;
  return typeof e?.code === 'number' ? (e as grpc.ServiceError) : grpcError(grpc.status.UNAUTHENTICATED, (err as Error).message);
}

/** Answers a refused call: through the unary callback when there is one, else by ending the stream. */
function refuse(call: SurfaceCall, rest: unknown[], err: grpc.ServiceError): void {
  const callback = rest[0];
  if (typeof callback === 'function') (callback as grpc.sendUnaryData<never>)(err);
  else call.emit('error', err);
}

export function nodeGate(authenticate: Authenticator, log: Logger): NodeGate {
  return (opts, handler) =>
    (call, ...rest) => {
      const header = call.metadata.get(NODE_HEADER)[0];
      const refused = (e: unknown): void => {
        const err = asServiceError(e);
        log.warn({ peer: call.getPeer(), claimedNode: typeof header === 'string' ? header : undefined, reason: err.details ?? err.message }, `refused ${opts.what}`);
        refuse(call, rest, err);
      };
      const proven = (caller: NodeCaller): void => {
        // A check that had to ask the API can outlast the caller; nothing is left to serve.
        if (call.cancelled) return;
        // The node comes from the credential alone; a call that says otherwise is refused, not trusted.
        const claims: [string, unknown][] = [
          ['x-nodemesh-node header', header],
          [opts.claim?.noun ?? '', opts.claim?.node(call)],
        ];
        for (const [noun, claimed] of claims) {
          if (claimed === undefined || claimed === '' || claimed === caller.node) continue;
          const err = grpcError(grpc.status.PERMISSION_DENIED, `the ${noun} names node ${String(claimed)} but the caller's token is node ${caller.node}'s`);
          log.warn({ peer: call.getPeer(), node: caller.node, claimedNode: String(claimed), reason: err.details }, `refused ${opts.what}`);
          refuse(call, rest, err);
          return;
        }
        handler(caller, call, ...rest);
      };
      let result: NodeCaller | Promise<NodeCaller>;
      try {
        result = authenticate(call.metadata);
      } catch (e) {
        refused(e);
        return;
      }
      if (result instanceof Promise) result.then(proven, refused).catch((err: unknown) => log.error({ err, peer: call.getPeer() }, `failed to serve ${opts.what}`));
      else proven(result);
    };
}
