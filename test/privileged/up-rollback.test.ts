// `nodemesh up` that fails half-way leaves nothing behind: no namespace, bridge, pin, cgroup or
// daemon holding the node's ports. A re-run on a mesh that is up never tears that mesh down.
// The failure is real: the control plane's admin port is taken, so the control plane exits
// during start, after the simulator has already set the node up.
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, expect, it } from 'vitest';
import { down, up } from '../../src/cluster/index.js';
import { agentPid } from '../../src/cluster/up.js';
import { DEFAULT_PIN_ROOT, PORTS } from '../../src/net/index.js';
import { listPods } from '../../src/sim/index.js';
import { describePrivileged } from '../helpers/privileged.js';
import { fixtureBin, leftovers, podRunner, writeConfig, processAlive } from '../helpers/mesh.js';

const config = `
apiVersion: v1
kind: Namespace
metadata: { name: shop, labels: { nodemesh.io/dataplane-mode: ambient } }
---
apiVersion: v1
kind: Pod
metadata: { name: backend, namespace: shop }
spec:
  containers:
  - { name: s, command: [python3, ${join(fixtureBin, 'nm_server.py')}, "8080"], ports: [{ containerPort: 8080 }] }
---
apiVersion: v1
kind: Pod
metadata: { name: client, namespace: shop }
spec:
  containers:
  - { name: c, command: [sleep, infinity] }
`;

function listen(port: number): Promise<Server> {
  return new Promise((resolve, reject) => {
    // It drops whatever connects (the readiness poll does), so closing it never waits.
    const s = createServer((c) => c.destroy());
    s.once('error', reject);
    s.listen({ host: '127.0.0.1', port, exclusive: true }, () => resolve(s));
  });
}

describePrivileged('nodemesh up: a failed start leaves nothing behind', () => {
  const dir = writeConfig(config);
  const sd = mkdtempSync(join(tmpdir(), 'nm-e2e-up-'));
  let squat: Server | undefined;

  afterAll(async () => {
    squat?.close();
    await down(sd).catch(() => {});
    rmSync(dir, { recursive: true, force: true });
    rmSync(sd, { recursive: true, force: true });
    expect(leftovers(DEFAULT_PIN_ROOT)).toEqual([]);
  });

  it('rolls back a first up that fails, and a later up on the same state dir works', async () => {
    expect(leftovers(DEFAULT_PIN_ROOT)).toEqual([]);
    squat = await listen(PORTS.controlPlaneAdmin);
    await expect(up(dir, sd)).rejects.toThrow(/control plane exited during start/);
    // Nothing of it is left: no pod, namespace, bridge, pin or cgroup, no agent.
    expect(leftovers(DEFAULT_PIN_ROOT)).toEqual([]);
    expect(await listPods({ stateDir: sd })).toEqual([]);
    expect(agentPid(sd)).toBeUndefined();
    // The ports it would have held are free (the agent's admin port among them).
    (await listen(PORTS.admin)).close();

    // The same command once the port is free: the mesh comes up and carries traffic.
    await new Promise<void>((r) => squat!.close(() => r()));
    squat = undefined;
    await up(dir, sd);
    const pods = await listPods({ stateDir: sd });
    const backend = pods.find((p) => p.name === 'backend')!;
    const res = podRunner(sd).client('shop/client', ['who', backend.ip, '8080']);
    expect(res.reply).toBeTruthy();
  });

  it('leaves a running mesh as it was when a re-run fails', async () => {
    const pid = agentPid(sd);
    expect(processAlive(pid)).toBe(true);
    // A re-run that fails at once (its config directory is gone) touches nothing.
    await expect(up(join(dir, 'missing'), sd)).rejects.toThrow(/does not exist/);
    // One that fails later: a pod whose spec changed cannot be recreated while up (pods are immutable).
    const changed = writeConfig(config.replace('"8080"]', '"8081"]'));
    try {
      await expect(up(changed, sd)).rejects.toThrow(/immutable|different spec/);
    } finally {
      rmSync(changed, { recursive: true, force: true });
    }
    expect(agentPid(sd)).toBe(pid);
    expect(processAlive(pid)).toBe(true);
    const pods = await listPods({ stateDir: sd });
    expect(pods.map((p) => p.name).sort()).toEqual(['backend', 'client']);
    const backend = pods.find((p) => p.name === 'backend')!;
    expect(podRunner(sd).client('shop/client', ['who', backend.ip, '8080']).reply).toBeTruthy();
  });
});
