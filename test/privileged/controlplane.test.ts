// End to end with the control plane and the agent as separate processes: policy from the
// config directory reaches the data path, bad updates never replace good state, and the
// agent keeps serving while the control plane is gone.
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { describePrivileged } from '../helpers/privileged.js';
import { BACKEND, BATCH, DENY_FRONTEND, FRONTEND, FRONTEND_SERVICE_ACCOUNT, SHOP_NAMESPACE, yamlDocs } from '../helpers/shop.js';
import { agentPid } from '../../src/cluster/up.js';
import { leftovers, meshUp, writeConfig, type Mesh } from '../helpers/mesh.js';


const config = yamlDocs(SHOP_NAMESPACE, FRONTEND_SERVICE_ACCOUNT, BACKEND, FRONTEND, BATCH);

/**
 * A denied connection is reset by the proxy. The client sees ECONNRESET, or ENOTCONN when the
 * reset lands before its first call after connect(); either way nothing reached the app.
 */
function refused(r: Record<string, unknown>): boolean {
  return r.outcome === 'reset' || r.outcome === 'error:107:Transport endpoint is not connected';
}


describePrivileged('control plane to data path', () => {
  let mesh: Mesh;
  let dir: string;
  const policies = async () => ((await mesh.dump()) as unknown as { policies: { name: string }[] }).policies.map((p) => p.name);
  const waitPolicy = async (name: string, present: boolean, timeoutMs = 5000) => {
    const t0 = Date.now();
    while (Date.now() - t0 < timeoutMs) {
      if ((await policies()).includes(name) === present) return Date.now() - t0;
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error(`policy ${name} ${present ? 'never arrived' : 'never left'}`);
  };
  /** Waits until the proxy holds an open connection from this workload to this port. */
  const waitOpen = async (workload: string, port: number) => {
    const t0 = Date.now();
    while (Date.now() - t0 < 10_000) {
      if ((await mesh.flows()).some((f) => f.open && f.direction === 'inbound' && f.src.workload === workload && f.dst.port === port)) return;
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error(`no open connection from ${workload} to port ${port}`);
  };
  const reach = (from: string, port = 8080) => mesh.client(from, ['who', mesh.ip('shop/backend'), String(port)]);

  beforeAll(async () => {
    dir = writeConfig(config);
    mesh = await meshUp(dir, { controlPlane: true });
  });

  afterAll(async () => {
    await mesh?.down();
    rmSync(dir, { recursive: true, force: true });
    expect(leftovers(...(mesh ? [mesh.pinRoot] : []))).toEqual([]);
  });

  it('enrolls from the workloads the control plane publishes, with certificates for their identities', async () => {
    const d = (await mesh.dump()) as unknown as { mode: string; pods: { name: string }[]; certificates: { identity: string; state: string }[] };
    expect(d.mode).toBe('control-plane');
    expect(d.pods.map((p) => p.name).sort()).toEqual(['backend', 'batch', 'frontend']);
    const ids = d.certificates.map((c) => c.identity).sort();
    expect(ids).toEqual(['spiffe://cluster.local/ns/shop/sa/backend', 'spiffe://cluster.local/ns/shop/sa/default', 'spiffe://cluster.local/ns/shop/sa/frontend']);
  });

  it('applies a new policy file on the next connection, and lifts it when the file is deleted', async () => {
    expect(reach('shop/frontend').reply).toBeTruthy();
    writeFileSync(join(dir, 'deny.yaml'), DENY_FRONTEND);
    const ms = await waitPolicy('deny-frontend', true);
    expect(ms).toBeLessThan(2000);
    const denied = reach('shop/frontend');
    expect(refused(denied)).toBe(true);
    // Other identities are untouched.
    expect(reach('shop/batch').reply).toBeTruthy();
    const flows = await mesh.flows();
    const rec = flows.filter((f) => f.direction === 'inbound' && f.responseFlags === 'DENY').at(-1)!;
    expect(rec.policy).toEqual({ allowed: false, name: 'shop/deny-frontend' });
    expect(rec.src.principal).toBe('cluster.local/ns/shop/sa/frontend');
    const metrics = await (await fetch('http://127.0.0.1:15020/metrics')).text();
    expect(metrics).toMatch(/istio_tcp_connections_opened_total\{[^}]*source_workload="frontend"[^}]*response_flags="DENY"[^}]*\} 1/);

    rmSync(join(dir, 'deny.yaml'));
    await waitPolicy('deny-frontend', false);
    expect(reach('shop/frontend').reply).toBeTruthy();
  });

  it('keeps serving the last good policy when a file update is malformed', async () => {
    writeFileSync(join(dir, 'deny.yaml'), DENY_FRONTEND);
    await waitPolicy('deny-frontend', true);
    // The same file, broken: an unknown action. The control plane reports it and keeps the last good version.
    writeFileSync(join(dir, 'deny.yaml'), DENY_FRONTEND.replace('action: DENY', 'action: PERMIT'));
    await new Promise((r) => setTimeout(r, 1500));
    const errors = (await (await fetch('http://127.0.0.1:15014/debug/config-errors')).json()) as { file: string; line: number; message: string }[];
    expect(JSON.stringify(errors)).toMatch(/deny\.yaml/);
    expect(JSON.stringify(errors)).toMatch(/PERMIT/);
    expect(await policies()).toContain('deny-frontend');
    expect(refused(reach('shop/frontend'))).toBe(true);
    expect(reach('shop/batch').reply).toBeTruthy();
    rmSync(join(dir, 'deny.yaml'));
    await waitPolicy('deny-frontend', false);
  });

  it('closes an open connection within a second when a new policy denies it', async () => {
    const long = mesh.clientAsync('shop/frontend', ['echoloop', mesh.ip('shop/backend'), '9090', '6']);
    const other = mesh.clientAsync('shop/batch', ['echoloop', mesh.ip('shop/backend'), '9090', '3']);
    // Starting a client in a pod takes a while on a busy machine: write the policy only once
    // both connections are open, so that the deny hits an established connection.
    await waitOpen('frontend', 9090);
    await waitOpen('batch', 9090);
    const t0 = Date.now();
    writeFileSync(join(dir, 'deny.yaml'), DENY_FRONTEND);
    const res = await long;
    const closedAfter = Date.now() - t0;
    expect(res.outcome).toBe('reset');
    expect(closedAfter).toBeLessThan(1500); // watch debounce + push + re-evaluation, with slack for a busy machine
    // A connection the policy still allows keeps running.
    expect((await other).outcome).toBe('ok');
    const rec = (await mesh.flows()).filter((f) => f.error?.startsWith('closed:')).at(-1)!;
    expect(rec.policy).toEqual({ allowed: false, name: 'shop/deny-frontend' });
    // Both pods are on this node: the kernel was moving the bytes, and revoking still reset it.
    expect(rec.spliced).toBe(true);
    rmSync(join(dir, 'deny.yaml'));
    await waitPolicy('deny-frontend', false);
  });

  it('keeps existing and new connections working while the control plane is down, and resyncs without an agent restart', async () => {
    const pidBefore = agentPid(mesh.sd);
    const long = mesh.clientAsync('shop/frontend', ['echoloop', mesh.ip('shop/backend'), '9090', '4']);
    await waitOpen('frontend', 9090);
    await mesh.stopControlPlane();
    // New connection with no control plane: the agent's last good state serves it.
    expect(reach('shop/batch').reply).toBeTruthy();
    const res = await long;
    expect(res.outcome).toBe('ok');
    expect(Number(res.round_trips)).toBeGreaterThanOrEqual(10);
    // A policy written while the control plane is down takes effect once it is back.
    writeFileSync(join(dir, 'deny.yaml'), DENY_FRONTEND);
    await mesh.startControlPlane();
    // The agent retries with exponential backoff (200 ms doubling to 15 s, with jitter), so after
    // a few seconds of outage its next attempt can be that far off.
    await waitPolicy('deny-frontend', true, 20_000);
    expect(refused(reach('shop/frontend'))).toBe(true);
    expect(agentPid(mesh.sd)).toBe(pidBefore);
    expect(readFileSync(join(mesh.sd, 'agent', 'agent.log'), 'utf8')).toMatch(/first xDS sync complete/);
  });
});
