// HTTP/2 error code names for HBONE's messages (the error classes are in src/errors.ts).
import { constants } from 'node:http2';

const H2_NAMES = new Map<number, string>(
  Object.entries(constants)
    .filter(([k]) => /^NGHTTP2_(NO_ERROR|PROTOCOL_ERROR|INTERNAL_ERROR|FLOW_CONTROL_ERROR|SETTINGS_TIMEOUT|STREAM_CLOSED|FRAME_SIZE_ERROR|REFUSED_STREAM|CANCEL|COMPRESSION_ERROR|CONNECT_ERROR|ENHANCE_YOUR_CALM|INADEQUATE_SECURITY|HTTP_1_1_REQUIRED)$/.test(k))
    .map(([k, v]) => [v as number, k.slice('NGHTTP2_'.length)]),
);

/** `CONNECT_ERROR` for 0xa, and so on; the number for codes without a name. */
export function h2CodeName(code: number | undefined): string {
  return code === undefined ? 'unknown' : (H2_NAMES.get(code) ?? `0x${code.toString(16)}`);
}
