// The one gate every control-plane gRPC handler (xDS, CA, pod status) is registered through:
// it authenticates the calling node agent, finds its node, and refuses a call the same way
// for unary calls and streams (UNAUTHENTICATED, or PERMISSION_DENIED for another node's data).
import * as grpc from '@grpc/grpc-js';
import type { Logger } from '../log.js';
import { grpcError } from './auth.js';

/** Checks a call's metadata: returns the caller's node, or throws a gRPC UNAUTHENTICATED error. */
export type Authenticator = (md: grpc.Metadata) => string;

/** What every grpc-js server call has (grpc-js's ServerSurfaceCall, which it does not export). */
export interface SurfaceCall {
  readonly metadata: grpc.Metadata;
  getPeer(): string;
  emit(event: 'error', err: grpc.ServiceError): boolean;
}

/** A grpc-js handler (`call`, then `callback` for unary calls) that is told the caller's node first. */
export type NodeHandler<C extends SurfaceCall, R extends unknown[]> = (node: string, call: C, ...rest: R) => void;

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
      let node: string;
      try {
        node = authenticate(call.metadata);
      } catch (e) {
        const err = asServiceError(e);
        log.warn({ peer: call.getPeer(), reason: err.details ?? err.message }, `refused ${opts.what}`);
        refuse(call, rest, err);
        return;
      }
      const claimed = opts.claim?.node(call);
      if (claimed && claimed !== node) {
        const err = grpcError(grpc.status.PERMISSION_DENIED, `the ${opts.claim!.noun} is for node ${claimed} but the caller is node ${node}`);
        log.warn({ peer: call.getPeer(), node, reason: err.details }, `refused ${opts.what}`);
        refuse(call, rest, err);
        return;
      }
      handler(node, call, ...rest);
    };
}
