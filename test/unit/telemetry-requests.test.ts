// Istio's request metrics as Prometheus scrapes them: the full label set for each reporter, the
// duration and size histograms in Envoy's buckets, gRPC status and response flags as their own
// series, the Host fallback for destination_service, and the bound on series kept.
import { Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { MeshMetrics } from '../../src/telemetry/index.js';
import { ISTIO_BUCKETS, REQUEST_LABELS, RequestMetrics, type RequestFacts, type RequestView } from '../../src/telemetry/requests.js';

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** The samples of a text exposition, labels in the order they were written. */
function parse(text: string): Sample[] {
  const out: Sample[] = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m) throw new Error(`unparsable line: ${line}`);
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]!] = l[2]!;
    out.push({ name: m[1]!, labels, value: Number(m[3]) });
  }
  return out;
}

async function scrape(registry: Registry, name: string): Promise<Sample[]> {
  return parse(await registry.metrics()).filter((s) => s.name === name);
}

function req(over: Partial<RequestFacts> = {}): RequestFacts {
  return {
    protocol: 'HTTP/1.1',
    method: 'GET',
    path: '/',
    authority: 'api.shop.svc.cluster.local',
    status: 200,
    requestBytes: 0,
    responseBytes: 0,
    durationMs: 3,
    responseFlags: '-',
    upstream: '10.0.0.2:8080',
    upgraded: false,
    attempts: 1,
    ...over,
  };
}

const web = { workload: 'web', namespace: 'shop', principal: 'cluster.local/ns/shop/sa/web', app: 'web', version: 'v1' };
const api = { workload: 'api-v2', namespace: 'shop', principal: 'cluster.local/ns/shop/sa/api', app: 'api', version: 'v2', canonicalService: 'api', canonicalRevision: 'v2' };
const service = { hostname: 'api.shop.svc.cluster.local', name: 'api', namespace: 'shop' };

function view(reporter: 'source' | 'destination', over: Partial<RequestView> = {}): RequestView {
  return { reporter, source: web, destination: api, service, securityPolicy: 'mutual_tls', ...over };
}

function only(samples: Sample[], where: Record<string, string>): Sample[] {
  return samples.filter((s) => Object.entries(where).every(([k, v]) => s.labels[k] === v));
}

describe('RequestMetrics', () => {
  it('counts a request once per reporter with the whole Istio label set, in Istio order', async () => {
    const registry = new Registry();
    const m = new RequestMetrics(registry);
    const r = req();
    m.record(view('source'), r);
    m.record(view('destination'), r);
    const series = await scrape(registry, 'istio_requests_total');
    expect(series).toHaveLength(2);
    const source = only(series, { reporter: 'source' });
    expect(source).toHaveLength(1);
    expect(Object.keys(source[0]!.labels)).toEqual([...REQUEST_LABELS]);
    expect(source[0]).toEqual({
      name: 'istio_requests_total',
      value: 1,
      labels: {
        reporter: 'source',
        source_workload: 'web',
        source_workload_namespace: 'shop',
        source_principal: 'spiffe://cluster.local/ns/shop/sa/web',
        source_app: 'web',
        source_version: 'v1',
        source_canonical_service: 'web',
        source_canonical_revision: 'latest',
        source_cluster: 'Kubernetes',
        destination_workload: 'api-v2',
        destination_workload_namespace: 'shop',
        destination_principal: 'spiffe://cluster.local/ns/shop/sa/api',
        destination_app: 'api',
        destination_version: 'v2',
        destination_service: 'api.shop.svc.cluster.local',
        destination_service_name: 'api',
        destination_service_namespace: 'shop',
        destination_canonical_service: 'api',
        destination_canonical_revision: 'v2',
        destination_cluster: 'Kubernetes',
        request_protocol: 'http',
        response_flags: '-',
        connection_security_policy: 'mutual_tls',
        response_code: '200',
        grpc_response_status: '',
      },
    });
    expect(only(series, { reporter: 'destination' })).toHaveLength(1);
  });

  it("fills the duration and size histograms in Envoy's default buckets", async () => {
    const registry = new Registry();
    const m = new RequestMetrics(registry);
    const v = view('source');
    m.record(v, req({ durationMs: 0.3, requestBytes: 0, responseBytes: 1 }));
    m.record(v, req({ durationMs: 7, requestBytes: 100, responseBytes: 5000 }));
    m.record(v, req({ durationMs: 7000, requestBytes: 2e9, responseBytes: 5001 }));
    const duration = await scrape(registry, 'istio_request_duration_milliseconds_bucket');
    expect(duration.map((s) => s.labels.le)).toEqual([...ISTIO_BUCKETS.map(String), '+Inf']);
    const le = (samples: Sample[]) => Object.fromEntries(samples.map((s) => [s.labels.le, s.value]));
    expect(le(duration)).toMatchObject({ '0.5': 1, '1': 1, '5': 1, '10': 2, '5000': 2, '10000': 3, '3600000': 3, '+Inf': 3 });
    expect(Object.keys(duration[0]!.labels)[0]).toBe('le');
    expect(duration[0]!.labels.reporter).toBe('source');
    expect((await scrape(registry, 'istio_request_duration_milliseconds_sum'))[0]!.value).toBeCloseTo(7007.3);
    expect((await scrape(registry, 'istio_request_duration_milliseconds_count'))[0]!.value).toBe(3);
    // 2e9 bytes is above every bound: only +Inf counts it.
    expect(le(await scrape(registry, 'istio_request_bytes_bucket'))).toMatchObject({ '0.5': 1, '50': 1, '100': 2, '3600000': 2, '+Inf': 3 });
    expect(le(await scrape(registry, 'istio_response_bytes_bucket'))).toMatchObject({ '0.5': 0, '1': 1, '2500': 1, '5000': 2, '10000': 3 });
    expect((await scrape(registry, 'istio_response_bytes_sum'))[0]!.value).toBe(10002);
  });

  it('labels gRPC requests with request_protocol grpc and the status Envoy would derive', async () => {
    const registry = new Registry();
    const m = new RequestMetrics(registry);
    const v = view('source');
    m.record(v, req({ protocol: 'HTTP/2', grpcStatus: '0' }));
    m.record(v, req({ protocol: 'HTTP/2', grpcStatus: '14' }));
    m.record(v, req({ protocol: 'HTTP/2', grpc: true, status: 503 })); // no grpc-status: mapped from 503
    m.record(v, req({ protocol: 'HTTP/2', grpc: true, status: 200 })); // 200 without grpc-status: UNKNOWN
    m.record(v, req({ protocol: 'HTTP/2', grpc: true, status: 0 })); // no response at all
    m.record(v, req({ protocol: 'HTTP/2', grpcStatus: 'oops' }));
    m.record(v, req({ protocol: 'HTTP/2', grpcStatus: '17' }));
    m.record(v, req({ protocol: 'HTTP/2' })); // plain HTTP/2
    const series = await scrape(registry, 'istio_requests_total');
    const got = series.map((s) => `${s.labels.request_protocol} ${s.labels.response_code} [${s.labels.grpc_response_status}] ${s.value}`).sort();
    expect(got).toEqual(['grpc 0 [] 1', 'grpc 200 [-1] 2', 'grpc 200 [0] 1', 'grpc 200 [14] 1', 'grpc 200 [2] 1', 'grpc 503 [14] 1', 'http 200 [] 1']);
  });

  it('keeps each response code and flag set in its own series', async () => {
    const registry = new Registry();
    const m = new RequestMetrics(registry);
    const v = view('source');
    m.record(v, req());
    m.record(v, req({ status: 503, responseFlags: 'UF,URX' }));
    m.record(v, req({ status: 503, responseFlags: 'UF,URX' }));
    m.record(v, req({ status: 503, responseFlags: 'UH' }));
    m.record(v, req({ status: 503 }));
    const got = (await scrape(registry, 'istio_requests_total')).map((s) => `${s.labels.response_code} ${s.labels.response_flags} ${s.value}`).sort();
    expect(got).toEqual(['200 - 1', '503 - 1', '503 UF,URX 2', '503 UH 1']);
  });

  it("names the authority as destination_service when the view has no Service, as Istio's Host fallback", async () => {
    const registry = new Registry();
    const m = new RequestMetrics(registry);
    const v = view('source', { service: undefined });
    m.record(v, req({ authority: '10.0.0.2:8080' }));
    m.record(v, req({ authority: 'api.example:80' }));
    m.record(v, req({ authority: '10.0.0.2:8080' }));
    const series = await scrape(registry, 'istio_requests_total');
    expect(series.map((s) => [s.labels.destination_service, s.labels.destination_service_name, s.labels.destination_service_namespace, s.value])).toEqual([
      ['10.0.0.2:8080', '10.0.0.2:8080', 'shop', 2],
      ['api.example:80', 'api.example:80', 'shop', 1],
    ]);

    const strict = new Registry();
    const n = new RequestMetrics(strict, { hostFallback: false });
    n.record(v, req({ authority: 'api.example:80' }));
    const s = await scrape(strict, 'istio_requests_total');
    expect(s.map((x) => [x.labels.destination_service, x.labels.destination_service_namespace])).toEqual([['unknown', 'unknown']]);
  });

  it('shares series between view objects with the same peers, not with other peers', async () => {
    const registry = new Registry();
    const m = new RequestMetrics(registry);
    m.record(view('source'), req());
    m.record(view('source'), req());
    m.record(view('source', { source: { ...web, workload: 'web-canary' } }), req());
    const got = (await scrape(registry, 'istio_requests_total')).map((s) => `${s.labels.source_workload} ${s.value}`);
    expect(got).toEqual(['web 2', 'web-canary 1']);
  });

  it('keeps at most maxSeries series, dropping the least recently used and counting it', async () => {
    const registry = new Registry();
    const m = new RequestMetrics(registry, { maxSeries: 3 });
    const v = view('source');
    for (const status of [200, 201, 202]) m.record(v, req({ status }));
    m.record(v, req({ status: 200 })); // used again: survives the next eviction
    m.record(v, req({ status: 203 }));
    expect(m.size).toBe(3);
    const codes = async () => (await scrape(registry, 'istio_requests_total')).map((s) => `${s.labels.response_code}=${s.value}`).sort();
    expect(await codes()).toEqual(['200=2', '202=1', '203=1']);
    expect((await scrape(registry, 'nodemesh_request_series_evictions_total'))[0]!.value).toBe(1);
    // The evicted series restarts from zero when it comes back; the histograms follow the counter.
    m.record(v, req({ status: 201 }));
    expect(m.size).toBe(3);
    expect(await codes()).toEqual(['200=2', '201=1', '203=1']);
    expect(new Set((await scrape(registry, 'istio_request_bytes_count')).map((s) => s.labels.response_code))).toEqual(new Set(['200', '201', '203']));
    expect((await scrape(registry, 'nodemesh_request_series_evictions_total'))[0]!.value).toBe(2);
  });

  it('brings back a connection whose every series was evicted, without duplicating series', async () => {
    const registry = new Registry();
    const m = new RequestMetrics(registry, { maxSeries: 1 });
    const a = view('source');
    const b = view('destination');
    m.record(a, req());
    m.record(b, req()); // evicts a's only series
    m.record(a, req());
    m.record(view('source'), req()); // another object with a's peers: the same series
    const got = (await scrape(registry, 'istio_requests_total')).map((s) => `${s.labels.reporter}=${s.value}`);
    expect(got).toEqual(['source=2']);
  });

  it('empties with the registry reset and gives JSON samples their full labels', async () => {
    const registry = new Registry();
    const m = new RequestMetrics(registry);
    m.record(view('source'), req({ durationMs: 2 }));
    const json = await registry.getMetricsAsJSON();
    const d = json.find((x) => x.name === 'istio_request_duration_milliseconds')!;
    expect(d.values[0]!.labels).toMatchObject({ le: 0.5, reporter: 'source', response_code: '200' });
    registry.resetMetrics();
    expect(m.size).toBe(0);
    expect(await scrape(registry, 'istio_requests_total')).toEqual([]);
    m.record(view('source'), req());
    expect((await scrape(registry, 'istio_requests_total')).map((s) => s.value)).toEqual([1]);
  });

  it("is MeshMetrics' requests, rendered with the agent's other metrics", async () => {
    const mesh = new MeshMetrics({ defaultMetrics: false, requests: { maxSeries: 10 } });
    mesh.requests.record(view('destination'), req({ status: 404 }));
    const samples = parse((await mesh.render()).body);
    expect(only(samples, { reporter: 'destination', response_code: '404' }).map((s) => s.name)).toContain('istio_requests_total');
    expect(samples.some((s) => s.name === 'nodemesh_enrolled_pods')).toBe(true);
  });
});
