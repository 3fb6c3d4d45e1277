// HTTP/2 flow-control and framing settings for HBONE sessions, shared by both ends, with the
// reasons behind the defaults (the measurements are DESIGN.md's "TLS and HBONE" table).
import type { Http2Session, Settings } from 'node:http2';

export interface HboneTuning {
  /** SETTINGS_INITIAL_WINDOW_SIZE: how far a peer may send ahead on one stream. */
  streamWindow: number;
  /** The connection-level receive window (WINDOW_UPDATE on stream 0). */
  connectionWindow: number;
  /** SETTINGS_MAX_FRAME_SIZE we accept (16 KiB .. 16 MiB - 1). */
  maxFrameSize: number;
  /** Node's per-session memory cap in MB; new streams are refused above it. */
  maxSessionMemoryMb: number;
}

const MiB = 1 << 20;

/**
 * Tuned defaults. Node's defaults (64 KiB stream and connection windows) stall a single stream
 * on every round trip of WINDOW_UPDATE: DESIGN.md measured 2.2 Gbit/s with them and 3.8 with
 * 4 MiB/16 MiB. The connection window also caps what one session can make its receiver buffer,
 * because Node sends WINDOW_UPDATE only as JS consumes data. The session memory cap must sit
 * above the connection window or a busy session refuses new streams (ENHANCE_YOUR_CALM).
 */
export const DEFAULT_TUNING: Readonly<HboneTuning> = {
  streamWindow: 4 * MiB,
  connectionWindow: 16 * MiB,
  maxFrameSize: 64 * 1024,
  maxSessionMemoryMb: 64,
};

/** What Node does when nothing is set; the baseline the benchmark compares against. */
export const NODE_DEFAULT_TUNING: Readonly<HboneTuning> = {
  streamWindow: 65_535,
  connectionWindow: 65_535,
  maxFrameSize: 16_384,
  maxSessionMemoryMb: 10,
};

export function resolveTuning(t: Partial<HboneTuning> | undefined): HboneTuning {
  const r = { ...DEFAULT_TUNING, ...t };
  if (!Number.isInteger(r.streamWindow) || r.streamWindow < 65_535 || r.streamWindow > 2 ** 31 - 1) {
    throw new RangeError(`HBONE streamWindow must be an integer in [65535, 2^31-1], got ${r.streamWindow}`);
  }
  if (!Number.isInteger(r.connectionWindow) || r.connectionWindow < 65_535 || r.connectionWindow > 2 ** 31 - 1) {
    throw new RangeError(`HBONE connectionWindow must be an integer in [65535, 2^31-1], got ${r.connectionWindow}`);
  }
  if (!Number.isInteger(r.maxFrameSize) || r.maxFrameSize < 16_384 || r.maxFrameSize > 2 ** 24 - 1) {
    throw new RangeError(`HBONE maxFrameSize must be an integer in [16384, 2^24-1], got ${r.maxFrameSize}`);
  }
  if (!(r.maxSessionMemoryMb >= 1)) throw new RangeError(`HBONE maxSessionMemoryMb must be at least 1, got ${r.maxSessionMemoryMb}`);
  return r;
}

export function localSettings(t: HboneTuning, extra: Settings = {}): Settings {
  return { initialWindowSize: t.streamWindow, maxFrameSize: t.maxFrameSize, ...extra };
}

/** Raises the connection window; call once the session's handle exists ('connect'). */
export function applyConnectionWindow(session: Http2Session, t: HboneTuning): void {
  if (t.connectionWindow > 65_535 && !session.destroyed) session.setLocalWindowSize(t.connectionWindow);
}
