// The GAMMA runner's client and judge (test/privileged/gamma.test.ts): a case's requests as
// one curl run inside a pod (a config file with a group per request), and what each answer
// lacks against its GammaExpect (test/fixtures/gamma/model.ts).
import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { backendName, PODS, SERVICES, type GammaExpect, type GammaRequest } from '../fixtures/gamma/model.js';
import type { EchoReply } from './echo-server.js';
import type { PodRunner } from './mesh.js';

/** One answer as curl saw it. */
export interface Answer {
  url: string;
  /** 0 when curl got no HTTP answer (then `error` says why). */
  status: number;
  error: string;
  /** Lower-case names, one value per field line, in order. */
  headers: Record<string, string[]>;
  /** The echo's JSON, when the body was one. */
  echo?: EchoReply;
}

/** `ns/name` of a pod of base.yaml, as `sim exec` names it. */
export const podRef = (key: keyof typeof PODS): string => `${PODS[key].namespace}/${PODS[key].name}`;

/** The URL a request goes to: the Service's clusterIP or the pod's IP, never a name (no DNS). */
export function requestUrl(r: GammaRequest, podIp: (pod: string) => string): string {
  const host = 'service' in r.to ? SERVICES[r.to.service].clusterIP : podIp(podRef(r.to.pod));
  return `http://${host}:${r.to.port}${r.path}`;
}

/** The field lines curl sends: the authority as Host unless `headers.Host` says otherwise. */
export function requestHeaders(r: GammaRequest): string[] {
  const given = Object.entries(r.headers);
  const host = given.find(([n]) => n.toLowerCase() === 'host')?.[1] ?? r.authority;
  return [...(host === undefined ? [] : [`Host: ${host}`]), ...given.filter(([n]) => n.toLowerCase() !== 'host').map(([n, v]) => `${n}: ${v}`)];
}

const quote = (s: string): string => `"${s.replace(/\\/g, '\\\\').replace(/"/g, '\\"')}"`;

/**
 * Sends every request once from `pod` (all of them in parallel) with one curl process, and
 * returns the answers in order. `scratch` is a directory the pod can write (pods share the
 * host's filesystem), `tag` keeps this batch's files apart from the others'.
 */
export function sendBatch(run: PodRunner, pod: string, reqs: GammaRequest[], podIp: (pod: string) => string, scratch: string, tag: string): Answer[] {
  const urls = reqs.map((r) => requestUrl(r, podIp));
  const file = (i: number, ext: string) => join(scratch, `${tag}-${i}.${ext}`);
  const groups = reqs.map((r, i) =>
    [
      `url = ${quote(urls[i]!)}`,
      ...(r.method === 'GET' ? [] : [`request = ${quote(r.method)}`]),
      ...requestHeaders(r).map((h) => `header = ${quote(h)}`),
      'globoff',
      'silent',
      'max-time = 5',
      'connect-timeout = 3',
      `output = ${quote(file(i, 'body'))}`,
      `dump-header = ${quote(file(i, 'head'))}`,
      `write-out = ${quote(`${i} %{http_code} %{exitcode} %{errormsg}\\n`)}`,
    ].join('\n'),
  );
  const config = file(0, 'curlrc');
  writeFileSync(config, `parallel\nparallel-max = 50\n${groups.join('\nnext\n')}\n`);
  const r = run.exec(pod, ['curl', '-K', config], 60_000);
  const written = new Map<number, { status: number; error: string }>();
  for (const line of r.stdout.split('\n')) {
    const m = /^(\d+) (\d{3}) (\d+) ?(.*)$/.exec(line);
    if (m) written.set(Number(m[1]), { status: Number(m[2]), error: m[3] === '0' ? '' : `curl exit ${m[3]}: ${m[4]}` });
  }
  rmSync(config, { force: true });
  return reqs.map((_, i) => {
    const w = written.get(i) ?? { status: 0, error: `curl printed nothing for it (exit ${r.code}): ${r.stderr.trim()}` };
    const headers: Record<string, string[]> = {};
    const head = existsSync(file(i, 'head')) ? readFileSync(file(i, 'head'), 'utf8') : '';
    for (const line of head.split('\r\n').slice(1)) {
      const at = line.indexOf(':');
      if (at > 0) (headers[line.slice(0, at).trim().toLowerCase()] ??= []).push(line.slice(at + 1).trim());
    }
    let echo: EchoReply | undefined;
    try {
      const parsed = JSON.parse(readFileSync(file(i, 'body'), 'utf8')) as EchoReply;
      if (parsed && typeof parsed.pod === 'string') echo = parsed;
    } catch {
      // Not an echo answer (a redirect, a proxy's error page, nothing): the checks say what is missing.
    }
    rmSync(file(i, 'head'), { force: true });
    rmSync(file(i, 'body'), { force: true });
    return { url: urls[i]!, status: w.status, error: w.error, headers, ...(echo ? { echo } : {}) };
  });
}

/** The echo's view of a request field: every line of it joined with ',', or undefined. */
function seen(echo: EchoReply, name: string): string | undefined {
  const lines = Object.entries(echo.headers)
    .filter(([n]) => n.toLowerCase() === name.toLowerCase())
    .flatMap(([, v]) => v);
  return lines.length ? lines.join(',') : undefined;
}

/** What `a` lacks against `e`, one line per miss; empty when it meets every expectation (weights aside). */
export function check(e: GammaExpect, a: Answer, requestUrlText: string): string[] {
  const out: string[] = [];
  if (!e.status.includes(a.status)) out.push(`status ${a.status}${a.error ? ` (${a.error})` : ''}, want one of [${e.status.join(' ')}]`);
  const needsEcho = e.backend || e.requestHeaders || e.absentRequestHeaders || e.path !== undefined;
  if (needsEcho && !a.echo) {
    out.push('no echo JSON in the answer');
    return out;
  }
  if (e.backend && a.echo && (!a.echo.pod.startsWith(e.backend.podPrefix) || a.echo.namespace !== e.backend.namespace)) {
    out.push(`answered by ${a.echo.namespace}/${a.echo.pod}, want ${e.backend.namespace}/${e.backend.podPrefix}-*`);
  }
  if (e.path !== undefined && a.echo && a.echo.path !== e.path) out.push(`backend saw path ${a.echo.path}, want ${e.path}`);
  for (const [name, want] of Object.entries(e.requestHeaders ?? {})) {
    const got = seen(a.echo!, name);
    if (got !== want) out.push(`backend saw ${name}: ${got ?? '<absent>'}, want ${want}`);
  }
  for (const name of e.absentRequestHeaders ?? []) {
    const got = seen(a.echo!, name);
    if (got !== undefined) out.push(`backend saw ${name}: ${got}, want it absent`);
  }
  for (const [name, want] of Object.entries(e.responseHeaders ?? {})) {
    const got = a.headers[name.toLowerCase()]?.[0];
    if (got !== want) out.push(`response ${name}: ${got ?? '<absent>'}, want ${want}`);
  }
  for (const name of e.absentResponseHeaders ?? []) {
    const got = a.headers[name.toLowerCase()];
    if (got) out.push(`response ${name}: ${got.join(',')}, want it absent`);
  }
  if (e.redirect) {
    const location = a.headers.location?.[0];
    if (location === undefined) out.push('no Location');
    else {
      let u: URL | undefined;
      try {
        u = new URL(location, requestUrlText || undefined);
      } catch {
        out.push(`Location ${location} is no URL`);
      }
      if (u) {
        const r = e.redirect;
        if (u.protocol !== `${r.scheme}:`) out.push(`Location ${location}: scheme ${u.protocol.slice(0, -1)}, want ${r.scheme}`);
        if (u.pathname !== r.path) out.push(`Location ${location}: path ${u.pathname}, want ${r.path}`);
        if (r.host !== undefined && u.hostname !== r.host) out.push(`Location ${location}: host ${u.hostname}, want ${r.host}`);
        // URL drops a scheme's default port, so '' is "absent or the default".
        if (u.port !== (r.port ?? '')) out.push(`Location ${location}: port ${u.port || '<default>'}, want ${r.port ?? 'absent or the default'}`);
      }
    }
  }
  return out;
}

/** What a batch of answers lacks against `e.weights` (and `e.status` for each). */
export function checkWeights(e: GammaExpect, answers: Answer[]): string[] {
  const w = e.weights!;
  const bad = answers.filter((a) => !e.status.includes(a.status) || !a.echo);
  if (bad.length) return [`${bad.length}/${answers.length} answers failed, e.g. status ${bad[0]!.status} ${bad[0]!.error}`];
  const counts = new Map<string, number>();
  for (const a of answers) counts.set(backendName(a.echo!.pod), (counts.get(backendName(a.echo!.pod)) ?? 0) + 1);
  const share = (n: string) => (counts.get(n) ?? 0) / answers.length;
  const got = [...counts].map(([n, k]) => `${n}=${k}`).join(' ');
  const out: string[] = [];
  for (const [name, want] of Object.entries(w.share)) {
    if (Math.abs(share(name) - want) > w.tolerance) out.push(`${name} got ${share(name).toFixed(3)} of ${answers.length}, want ${want}±${w.tolerance} (${got})`);
  }
  for (const name of counts.keys()) if (!(name in w.share)) out.push(`unexpected backend ${name} (${got})`);
  return out;
}

/** A short account of an answer for failure messages. */
export function describeAnswer(a: Answer): string {
  const echo = a.echo ? ` from ${a.echo.namespace}/${a.echo.pod} path ${a.echo.path} headers ${JSON.stringify(a.echo.headers)}` : '';
  const location = a.headers.location ? ` Location ${a.headers.location[0]}` : '';
  const extra = Object.entries(a.headers)
    .filter(([n]) => n.startsWith('x-') && n !== 'x-content-type-options')
    .map(([n, v]) => ` ${n}: ${v.join(',')}`)
    .join('');
  return `${a.status}${a.error ? ` (${a.error})` : ''}${location}${echo}${extra ? `; response${extra}` : ''}`;
}
