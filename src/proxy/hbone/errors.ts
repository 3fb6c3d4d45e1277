// HBONE failures as NodemeshErrors: a non-200 answer to CONNECT (with its status and the
// denying policy), and resets, each carrying what telemetry and the relay need.
import { constants } from 'node:http2';
import { NodemeshError, type ErrorDetails } from '../../errors.js';

const H2_NAMES = new Map<number, string>(
  Object.entries(constants)
    .filter(([k]) => /^NGHTTP2_(NO_ERROR|PROTOCOL_ERROR|INTERNAL_ERROR|FLOW_CONTROL_ERROR|SETTINGS_TIMEOUT|STREAM_CLOSED|FRAME_SIZE_ERROR|REFUSED_STREAM|CANCEL|COMPRESSION_ERROR|CONNECT_ERROR|ENHANCE_YOUR_CALM|INADEQUATE_SECURITY|HTTP_1_1_REQUIRED)$/.test(k))
    .map(([k, v]) => [v as number, k.slice('NGHTTP2_'.length)]),
);

/** `CONNECT_ERROR` for 0xa, and so on; the number for codes without a name. */
export function h2CodeName(code: number | undefined): string {
  return code === undefined ? 'unknown' : (H2_NAMES.get(code) ?? `0x${code.toString(16)}`);
}

/** The peer answered CONNECT with a status other than 200. */
export class HboneStatusError extends NodemeshError {
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
export class HboneResetError extends NodemeshError {
  /** The RST_STREAM / GOAWAY error code, when there was one. */
  readonly h2Code: number | undefined;

  constructor(message: string, details: ErrorDetails & { h2Code?: number } = {}) {
    super('NM_ERR_HBONE_RESET', message, details);
    this.h2Code = details.h2Code;
  }
}
