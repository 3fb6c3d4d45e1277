// The two-node demo's L7 act: applies examples/multinode-l7/routes.yaml (an HTTPRoute canary
// with a header route and a retry, a VirtualService fault, an L7-only DENY), drives curl from
// multinode/client on node-a, and shows what each node's proxy did and counted. No waypoint:
// node-a's proxy routes, the destination's proxy authorizes.
import { copyFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { PORTS } from '../net/index.js';
import { curlIn, printTable } from '../cluster/index.js';
import type { SimNodeInfo } from '../sim/index.js';
import { simExec } from './pod-exec.js';

export const L7_ACT_FILE = fileURLToPath(new URL('../../examples/multinode-l7/routes.yaml', import.meta.url));

const WEB = '10.96.1.10';
const WEB_V1 = '10.96.1.12';
const WEB_V2 = '10.96.1.13';

/** `n` requests in one curl (one connection, keep-alive): each answer's status and first body line. */
function curlMany(sd: string, url: string, n: number, args: string[] = []): { status: string; body: string }[] {
  const r = simExec('multinode/client', ['curl', '-sS', '-m', '20', '-w', '\n@@%{http_code}\n', ...args, ...Array.from({ length: n }, () => url)], sd);
  const out: { status: string; body: string }[] = [];
  let body: string[] = [];
  for (const line of r.out.split('\n')) {
    if (line.startsWith('@@')) {
      out.push({ status: line.slice(2), body: body.join(' ').trim() });
      body = [];
    } else if (line) body.push(line);
  }
  return out;
}

const count = (xs: string[]): Record<string, number> => xs.reduce<Record<string, number>>((m, x) => ((m[x] = (m[x] ?? 0) + 1), m), {});
const who = (body: string): string => /web-[ab]/.exec(body)?.[0] ?? body.slice(0, 30);

/** Runs the act in `dir` (the demo's copy of examples/multinode); returns the number of unexpected results. */
export async function l7Act(dir: string, sd: string, nodes: SimNodeInfo[]): Promise<number> {
  process.stdout.write(`\nL7 act: applying ${L7_ACT_FILE.replace(/.*\/examples\//, 'examples/')} (HTTPRoute canary, VirtualService fault, L7 DENY).\n`);
  copyFileSync(L7_ACT_FILE, join(dir, 'l7-routes.yaml'));
  // The control plane notices the file and every agent gets the routes: wait until the header route answers.
  const t0 = Date.now();
  while (Date.now() - t0 < 15_000 && !curlMany(sd, `http://${WEB}/`, 4, ['-H', 'x-canary: yes']).every((r) => r.body.includes('web-b'))) {
    await new Promise((r) => setTimeout(r, 200));
  }
  let failures = 0;
  const rows: string[][] = [];
  const row = (what: string, got: string, ok: boolean): void => {
    if (!ok) failures++;
    rows.push([what, got, ok ? 'ok' : 'UNEXPECTED']);
  };

  const split = count(curlMany(sd, `http://${WEB}/`, 100).map((r) => who(r.body)));
  const v2 = split['web-b'] ?? 0;
  row('100 x GET web (90/10 canary)', `web-a (v1): ${split['web-a'] ?? 0}, web-b (v2): ${v2}`, v2 >= 2 && v2 <= 25 && (split['web-a'] ?? 0) + v2 === 100);
  const canary = count(curlMany(sd, `http://${WEB}/`, 10, ['-H', 'x-canary: yes']).map((r) => who(r.body)));
  row('10 x GET web, x-canary: yes', Object.entries(canary).map(([k, v]) => `${k}: ${v}`).join(', '), canary['web-b'] === 10);
  const retried = curlMany(sd, `http://${WEB}/flaky/2`, 1)[0];
  row('GET web/flaky/2 (fails twice, retried)', `${retried?.status} ${retried?.body.slice(0, 34)}`, retried?.status === '200');
  const direct = curlMany(sd, `http://${WEB_V1}/flaky/1`, 1)[0];
  row('GET web-v1/flaky/1 (no retry route)', `${direct?.status} ${direct?.body.slice(0, 34)}`, direct?.status === '503');
  const fault = curlMany(sd, `http://${WEB_V2}/`, 1, ['-H', 'x-fault: abort'])[0];
  row('GET web-v2, x-fault: abort (injected)', `${fault?.status} ${fault?.body}`, fault?.status === '503' && fault.body === 'fault filter abort');
  for (const [name, url] of [
    ['web-v1 (same node)', `http://${WEB_V1}/admin`],
    ['web-v2 (node-b, HBONE)', `http://${WEB_V2}/admin`],
  ] as const) {
    const post = curlMany(sd, url, 1, ['-X', 'POST'])[0];
    row(`POST ${name}/admin`, `${post?.status} ${post?.body}`, post?.status === '403' && post.body === 'RBAC: access denied');
    const get = curlMany(sd, url, 1)[0];
    row(`GET ${name}/admin`, `${get?.status} ${who(get?.body ?? '')}`, get?.status === '200');
  }
  process.stdout.write('\n');
  printTable(['REQUESTS FROM multinode/client (node-a)', 'RESULT', ''], rows);

  // What each proxy counted: Istio's istio_requests_total, by reporter, destination and code.
  const sums = new Map<string, number>();
  for (const n of nodes) {
    const text = (await curlIn(n.netnsPath!, `http://127.0.0.1:${PORTS.metrics}/metrics`)).body;
    for (const line of text.split('\n')) {
      if (!line.startsWith('istio_requests_total{')) continue;
      const l = (k: string) => new RegExp(`${k}="([^"]*)"`).exec(line)?.[1] ?? '';
      const key = [n.name, l('reporter'), l('destination_workload'), l('response_code'), l('response_flags')].join('\t');
      sums.set(key, (sums.get(key) ?? 0) + Number(line.slice(line.lastIndexOf(' ') + 1)));
    }
  }
  process.stdout.write('\nistio_requests_total on each node (curl 127.0.0.1:15020/metrics in the node), summed:\n');
  printTable(['NODE', 'REPORTER', 'DESTINATION', 'CODE', 'FLAGS', 'REQUESTS'], [...sums].map(([k, v]) => [...k.split('\t'), String(v)]));
  return failures;
}
