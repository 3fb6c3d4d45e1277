// The registry of nodemesh error codes: every error the project throws on purpose is a
// NodemeshError with one of these stable codes. docs/errors.md documents each code, and a
// unit test fails when the two disagree.

export const ErrorCodes = {
  NM_ERR_CONFIG_YAML: 'A config file is not valid YAML.',
  NM_ERR_CONFIG_INVALID: 'A Kubernetes resource in a config file has a missing or wrongly typed field.',
  NM_ERR_CONFIG_CONFLICT: 'Two resources conflict (same name twice, or an IP already in use).',
  NM_ERR_NATIVE_MISSING: 'The native addon could not be loaded from any build directory.',
  NM_ERR_NATIVE: 'A native (libbpf or socket) call failed; errno, code and syscall say which.',
  NM_ERR_NOT_ROOT: 'The command needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN, CAP_BPF).',
  NM_ERR_NO_CGROUP2: 'No cgroup v2 hierarchy is mounted.',
  NM_ERR_NO_BPFFS: 'No bpffs could be found or mounted.',
  NM_ERR_BPF_OBJECT: 'A compiled BPF object is missing or could not be loaded.',
  NM_ERR_CNI: 'A CNI plugin invocation failed.',
  NM_ERR_SIM_STATE: 'The simulator state is missing, corrupt, or does not match the host.',
  NM_ERR_SIM_POD: 'A simulated pod could not be created or found.',
  NM_ERR_AGENT_UNAVAILABLE: 'The node agent is not running or not answering on its socket.',
  NM_ERR_ENROLL: 'A pod could not be enrolled into the mesh.',
  NM_ERR_ORIGINAL_DST: 'The original destination of a captured connection is unknown.',
  NM_ERR_USAGE: 'A command was called with wrong arguments.',
  NM_ERR_XDS_RESOURCE: 'An xDS resource was rejected (NACK).',
  NM_ERR_XDS_UNAVAILABLE: 'The control plane cannot be reached.',
  NM_ERR_CA: 'A certificate request was refused or failed.',
  NM_ERR_AUTH: 'A caller failed to authenticate to the control plane.',
  NM_ERR_POLICY: 'A policy cannot be translated.',
  NM_ERR_TIMEOUT: 'An operation did not finish in time.',
  NM_ERR_REDIRECT_CLOSED: 'A Redirector was used after close().',
  NM_ERR_HBONE_CONNECT: "The TCP connection to a peer's HBONE port (15008) failed or timed out.",
  NM_ERR_HBONE_TLS: 'The TLS handshake with an HBONE peer failed (untrusted or missing certificate, no TLS 1.3, no h2).',
  NM_ERR_HBONE_IDENTITY: "An HBONE peer's certificate names the wrong identity or trust domain.",
  NM_ERR_HBONE_STATUS: 'An HBONE peer answered CONNECT with a status other than 200 (the error carries `status`).',
  NM_ERR_HBONE_RESET: 'An HBONE stream was reset, or its HTTP/2 session failed, before both sides finished.',
  NM_ERR_HBONE_CLOSED: 'An HBONE pool or server was used after close().',
  NM_ERR_SIM_NODE: 'A simulated node could not be created, found or entered.',
} as const;

export type ErrorCode = keyof typeof ErrorCodes;

export interface ErrorDetails {
  /** Where the problem is: a file and line, a resource name, a pod. */
  where?: string;
  cause?: unknown;
  [key: string]: unknown;
}

export class NodemeshError extends Error {
  readonly code: ErrorCode;
  readonly where: string | undefined;
  readonly details: Record<string, unknown>;

  constructor(code: ErrorCode, message: string, details: ErrorDetails = {}) {
    const { where, cause, ...rest } = details;
    super(where ? `${where}: ${message}` : message, cause === undefined ? undefined : { cause });
    this.name = 'NodemeshError';
    this.code = code;
    this.where = where;
    this.details = rest;
  }
}

export function isNodemeshError(err: unknown, code?: ErrorCode): err is NodemeshError {
  return err instanceof NodemeshError && (code === undefined || err.code === code);
}
