// The registry of nodemesh errors: one class per family, each with its stable NM_ERR_* codes.
// Every error the project throws on purpose is one of these classes. docs/errors.md documents
// each code with the same description, and a unit test fails when the two disagree.

/** Each family's codes and what each means. The descriptions are docs/errors.md's "meaning". */
export const ErrorFamilies = {
  ConfigError: {
    NM_ERR_CONFIG_YAML: 'A config file is not valid YAML.',
    NM_ERR_CONFIG_INVALID: 'A Kubernetes resource in a config file has a missing or wrongly typed field.',
    NM_ERR_CONFIG_CONFLICT: 'Two resources conflict (same name twice, or an IP already in use).',
    NM_ERR_POLICY: 'A policy cannot be translated.',
    NM_ERR_KUBE_API: 'A request to the Kubernetes API server failed or it could not be reached (the error carries `status`, 0 when unreachable).',
    NM_ERR_CHART: 'The Helm chart in deploy/helm cannot be rendered (a template error, a required value missing, or a value the chart refuses).',
  },
  UsageError: {
    NM_ERR_USAGE: 'A command was called with wrong arguments.',
  },
  NativeError: {
    NM_ERR_NATIVE_MISSING: 'The native addon could not be loaded from any build directory.',
    NM_ERR_NATIVE: 'A native (libbpf or socket) call failed; errno, code and syscall say which.',
    NM_ERR_NOT_ROOT: 'The command needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN, CAP_BPF).',
    NM_ERR_NO_CGROUP2: 'No cgroup v2 hierarchy is mounted.',
    NM_ERR_NO_BPFFS: 'No bpffs could be found or mounted.',
    NM_ERR_BPF_OBJECT: 'A compiled BPF object is missing or could not be loaded.',
    NM_ERR_REDIRECT_CLOSED: 'A Redirector was used after close().',
  },
  CniError: {
    NM_ERR_CNI: 'A CNI plugin invocation failed.',
  },
  SimError: {
    NM_ERR_SIM_STATE: 'The simulator state is missing, corrupt, or does not match the host.',
    NM_ERR_SIM_POD: 'A simulated pod could not be created or found.',
    NM_ERR_SIM_NODE: 'A simulated node could not be created, found or entered.',
  },
  AgentError: {
    NM_ERR_AGENT_UNAVAILABLE: 'The node agent is not running or not answering on its socket.',
    NM_ERR_ENROLL: 'A pod could not be enrolled into the mesh.',
    NM_ERR_ORIGINAL_DST: 'The original destination of a captured connection is unknown.',
    NM_ERR_STATE_FILE: "A file of the agent's persisted state (xDS snapshot, workload certificate) is unreadable or corrupt.",
  },
  XdsError: {
    NM_ERR_XDS_RESOURCE: 'An xDS resource was rejected (NACK).',
    NM_ERR_XDS_UNAVAILABLE: 'The control plane cannot be reached.',
  },
  IdentityError: {
    NM_ERR_CA: 'A certificate request was refused or failed.',
    NM_ERR_AUTH: 'A caller failed to authenticate to the control plane.',
  },
  HboneError: {
    NM_ERR_HBONE_CONNECT: "The TCP connection to a peer's HBONE port (15008) failed or timed out.",
    NM_ERR_HBONE_TLS: 'The TLS handshake with an HBONE peer failed (untrusted or missing certificate, no TLS 1.3, no h2).',
    NM_ERR_HBONE_IDENTITY: "An HBONE peer's certificate names the wrong identity or trust domain.",
    NM_ERR_HBONE_STATUS: 'An HBONE peer answered CONNECT with a status other than 200 (the error carries `status`).',
    NM_ERR_HBONE_RESET: 'An HBONE stream was reset, or its HTTP/2 session failed, before both sides finished.',
    NM_ERR_HBONE_CLOSED: 'An HBONE pool or server was used after close().',
  },
  TimeoutError: {
    NM_ERR_TIMEOUT: 'An operation did not finish in time.',
  },
  BenchError: {
    NM_ERR_BENCH_RESULTS: 'The benchmarks\' results file (docs/benchmarks.json) is not one they wrote: not JSON, another schema version, or a field of the wrong shape.',
  },
} as const;

type Families = typeof ErrorFamilies;
export type ErrorFamily = keyof Families;
export type FamilyCode<F extends ErrorFamily> = keyof Families[F] & string;
export type ErrorCode = { [F in ErrorFamily]: FamilyCode<F> }[ErrorFamily];

/** Every code and its description, across families. */
export const ErrorCodes: Readonly<Record<ErrorCode, string>> = Object.assign({}, ...Object.values(ErrorFamilies));

/** The family each code belongs to. */
export const familyOf: Readonly<Record<ErrorCode, ErrorFamily>> = Object.fromEntries(
  Object.entries(ErrorFamilies).flatMap(([family, codes]) => Object.keys(codes).map((c) => [c, family])),
) as Record<ErrorCode, ErrorFamily>;

export interface ErrorDetails {
  /** Where the problem is: a file and line, a resource name, a pod. */
  where?: string;
  cause?: unknown;
  [key: string]: unknown;
}

/** The base of every family; construct a family class, never this one. */
export abstract class NodemeshError extends Error {
  readonly code: ErrorCode;
  readonly where: string | undefined;
  readonly details: Record<string, unknown>;

  protected constructor(family: ErrorFamily, code: ErrorCode, message: string, details: ErrorDetails = {}) {
    if (familyOf[code] !== family) throw new TypeError(`error code ${code} does not belong to ${family}`);
    const { where, cause, ...rest } = details;
    super(where ? `${where}: ${message}` : message, cause === undefined ? undefined : { cause });
    this.name = family;
    this.code = code;
    this.where = where;
    this.details = rest;
  }
}

export function isNodemeshError(err: unknown, code?: ErrorCode): err is NodemeshError {
  return err instanceof NodemeshError && (code === undefined || err.code === code);
}

/** A config file or resource that is not valid, or a policy that cannot be translated. */
export class ConfigError extends NodemeshError {
  constructor(code: FamilyCode<'ConfigError'>, message: string, details?: ErrorDetails) {
    super('ConfigError', code, message, details);
  }
}

/** A command called with wrong arguments; the CLI exits 2. */
export class UsageError extends NodemeshError {
  constructor(message: string, details?: ErrorDetails) {
    super('UsageError', 'NM_ERR_USAGE', message, details);
  }
}

/** The addon, libbpf, the kernel or the host (root, cgroup2, bpffs) said no. */
export class NativeError extends NodemeshError {
  constructor(code: FamilyCode<'NativeError'>, message: string, details?: ErrorDetails) {
    super('NativeError', code, message, details);
  }
}

/**
 * A CNI invocation failed. `cniCode` is the CNI spec's error code the agent answers the
 * plugin with (4 invalid config, 6 decoding failure, 7 invalid network config, 11 try again
 * later, 100+ plugin-specific); `cniDetails` is the spec's `details` string.
 */
export class CniError extends NodemeshError {
  readonly cniCode: number;
  readonly cniDetails: string;

  constructor(message: string, details: ErrorDetails & { cniCode?: number; cniDetails?: string } = {}) {
    const { cniCode = 100, cniDetails = '', ...rest } = details;
    super('CniError', 'NM_ERR_CNI', message, rest);
    this.cniCode = cniCode;
    this.cniDetails = cniDetails;
  }
}

/** The node simulator's state, pods or nodes. */
export class SimError extends NodemeshError {
  constructor(code: FamilyCode<'SimError'>, message: string, details?: ErrorDetails) {
    super('SimError', code, message, details);
  }
}

/** The node agent: not reachable, an enrollment that failed, an unknown original destination. */
export class AgentError extends NodemeshError {
  constructor(code: FamilyCode<'AgentError'>, message: string, details?: ErrorDetails) {
    super('AgentError', code, message, details);
  }
}

/** xDS: a resource rejected (it becomes the NACK's error_detail), or no control plane. */
export class XdsError extends NodemeshError {
  constructor(code: FamilyCode<'XdsError'>, message: string, details?: ErrorDetails) {
    super('XdsError', code, message, details);
  }
}

/** Certificates and the callers' credentials. */
export class IdentityError extends NodemeshError {
  constructor(code: FamilyCode<'IdentityError'>, message: string, details?: ErrorDetails) {
    super('IdentityError', code, message, details);
  }
}

/** The CA refused a request; `grpcCode` is the status the RPC answers. */
export class CaRefusal extends IdentityError {
  readonly grpcCode: number;

  constructor(message: string, grpcCode: number, details?: ErrorDetails) {
    super('NM_ERR_CA', message, details);
    this.grpcCode = grpcCode;
  }
}

/** HBONE tunnels: connect, TLS, peer identity, CONNECT status, resets. */
export class HboneError extends NodemeshError {
  constructor(code: FamilyCode<'HboneError'>, message: string, details?: ErrorDetails) {
    super('HboneError', code, message, details);
  }
}

/** The peer answered CONNECT with a status other than 200. */
export class HboneStatusError extends HboneError {
  readonly status: number;
  /** The policy that denied, when the peer names it (401 only). */
  readonly policy: string | undefined;

  constructor(status: number, message: string, details: ErrorDetails & { policy?: string } = {}) {
    super('NM_ERR_HBONE_STATUS', message, { ...details, status });
    this.status = status;
    this.policy = details.policy;
  }
}

/** A tunnel broke: RST_STREAM from the peer, or the HTTP/2 session or its TCP connection failed. */
export class HboneResetError extends HboneError {
  /** The RST_STREAM / GOAWAY error code, when there was one. */
  readonly h2Code: number | undefined;

  constructor(message: string, details: ErrorDetails & { h2Code?: number } = {}) {
    super('NM_ERR_HBONE_RESET', message, details);
    this.h2Code = details.h2Code;
  }
}

/** An operation did not finish in time; the message names it. */
export class TimeoutError extends NodemeshError {
  constructor(message: string, details?: ErrorDetails) {
    super('TimeoutError', 'NM_ERR_TIMEOUT', message, details);
  }
}

/** The benchmarks' results file is broken: which file, and which field (empty: the whole file). */
export class BenchError extends NodemeshError {
  readonly file: string;
  readonly field: string;
  constructor(file: string, field: string, why: string) {
    super('BenchError', 'NM_ERR_BENCH_RESULTS', `${field ? `${field} ` : ''}${why}`, { where: file });
    this.file = file;
    this.field = field;
  }
}

/**
 * An error of the family `code` belongs to, for callers that pick the code at run time (a
 * gRPC status mapped to a code, the first of several problems).
 */
export function errorFor(code: ErrorCode, message: string, details?: ErrorDetails): NodemeshError {
  switch (familyOf[code]) {
    case 'ConfigError':
      return new ConfigError(code as FamilyCode<'ConfigError'>, message, details);
    case 'UsageError':
      return new UsageError(message, details);
    case 'NativeError':
      return new NativeError(code as FamilyCode<'NativeError'>, message, details);
    case 'CniError':
      return new CniError(message, details);
    case 'SimError':
      return new SimError(code as FamilyCode<'SimError'>, message, details);
    case 'AgentError':
      return new AgentError(code as FamilyCode<'AgentError'>, message, details);
    case 'XdsError':
      return new XdsError(code as FamilyCode<'XdsError'>, message, details);
    case 'IdentityError':
      return new IdentityError(code as FamilyCode<'IdentityError'>, message, details);
    case 'HboneError':
      return new HboneError(code as FamilyCode<'HboneError'>, message, details);
    case 'TimeoutError':
      return new TimeoutError(message, details);
    case 'BenchError':
      return new BenchError(details?.where ?? '', '', message);
  }
}
