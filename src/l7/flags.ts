// The engine's own answers to failures: status, Envoy-style response flag and body, one table
// (docs/l7.md lists it for operators).

export interface LocalFailure {
  status: number;
  flags: string;
  body: string;
}

/** Envoy's wording where Envoy has one, so what operators search for finds it. */
export const FAILURES = {
  badRequest: { status: 400, flags: 'DPE', body: 'Bad Request' },
  headerTooLarge: { status: 431, flags: 'DPE', body: 'Request Header Fields Too Large' },
  headerTimeout: { status: 408, flags: 'DPE', body: 'request timeout' },
  connectMethod: { status: 405, flags: 'DPE', body: 'CONNECT is not proxied on an HTTP port' },
  connectFailure: { status: 503, flags: 'UF', body: 'upstream connect error or disconnect/reset before headers. reset reason: connection failure' },
  noHealthy: { status: 503, flags: 'UH', body: 'no healthy upstream' },
  overflow: { status: 503, flags: 'UO', body: 'upstream connect error or disconnect/reset before headers. reset reason: overflow' },
  upstreamReset: { status: 503, flags: 'UC', body: 'upstream connect error or disconnect/reset before headers. reset reason: connection termination' },
  upstreamProtocol: { status: 502, flags: 'UPE', body: 'upstream connect error or disconnect/reset before headers. reset reason: protocol error' },
  timeout: { status: 504, flags: 'UT', body: 'upstream request timeout' },
  routeError: { status: 500, flags: '-', body: 'internal error while routing the request' },
} as const satisfies Record<string, LocalFailure>;

/** How a failed open() is answered: by the error's own flags (UH, UO, ...) or as UF. */
export function connectFailure(err: { responseFlags?: string } | undefined, retried: boolean): LocalFailure {
  const f = err?.responseFlags;
  const base = f === 'UH' ? FAILURES.noHealthy : f === 'UO' ? FAILURES.overflow : f && f !== 'UF' ? { ...FAILURES.connectFailure, flags: f } : FAILURES.connectFailure;
  return retried ? { ...base, flags: `${base.flags},URX` } : base;
}

/** Adds a flag to a record's flags ('-' when none yet), once. */
export function addFlag(current: string, flag: string): string {
  if (current === '-' || current === '') return flag;
  return current.split(',').includes(flag) ? current : `${current},${flag}`;
}
