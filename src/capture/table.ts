// The readable live table of `nodemesh capture`: one line per record, fixed columns.
import type { CaptureEnd, CaptureRecord } from './record.js';

const COLUMNS: Array<[string, number]> = [
  ['TIME', 12],
  ['NODE', 10],
  ['VERDICT', 9],
  ['SOURCE', 38],
  ['DESTINATION', 38],
  ['POLICY/REASON', 28],
  ['BYTES ↑/↓', 14],
  ['DURATION', 8],
];

function cell(s: string, w: number): string {
  return s.length > w ? s.slice(0, w - 1) + '…' : s.padEnd(w);
}

function end(e: CaptureEnd): string {
  return `${e.pod ? `${e.pod} ` : ''}${e.ip}:${e.port}`;
}

function clock(iso: string): string {
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? iso.slice(0, 12) : d.toISOString().slice(11, 23);
}

export function tableHeader(withNode: boolean): string {
  return COLUMNS.filter(([h]) => withNode || h !== 'NODE')
    .map(([h, w]) => cell(h, w))
    .join(' ')
    .trimEnd();
}

/** One table line for a record; identities follow on an indented line when known. */
export function tableRow(r: CaptureRecord, withNode: boolean): string {
  const why = [r.policy, r.reason].filter(Boolean).join(': ') || '-';
  const values: Record<string, string> = {
    TIME: clock(r.time),
    NODE: r.node,
    VERDICT: r.verdict,
    SOURCE: end(r.src),
    DESTINATION: end(r.dst) + (r.originalDst ? ` (${r.originalDst})` : ''),
    'POLICY/REASON': why,
    'BYTES ↑/↓': r.bytes ? `${r.bytes.sent}/${r.bytes.received}` : '-',
    DURATION: r.durationMs !== undefined ? `${r.durationMs}ms` : '-',
  };
  const line = COLUMNS.filter(([h]) => withNode || h !== 'NODE')
    .map(([h, w]) => cell(values[h]!, w))
    .join(' ')
    .trimEnd();
  const ids = r.src.identity || r.dst.identity ? `\n${' '.repeat(13)}${r.src.identity ?? '-'} → ${r.dst.identity ?? '-'}${r.hbone ? ` via HBONE ${r.hbone.peer}` : ''}` : '';
  // An HTTP request's own line: what was asked and answered.
  const l7 = r.l7 ? `\n${' '.repeat(13)}${r.l7.method} ${r.l7.authority}${r.l7.path} → ${r.l7.status || 'no response'}${r.l7.grpcStatus !== undefined ? ` grpc-status ${r.l7.grpcStatus}` : ''}${r.responseFlags && r.responseFlags !== '-' ? ` (${r.responseFlags})` : ''}` : '';
  return line + ids + l7;
}
