// The plain manifests in deploy/manifests/ (rendered from the chart; deploy-chart.test.ts keeps
// them fresh and schema-valid) cannot be applied here (no cluster), so this keeps them honest
// against the code: every nodemesh container's command exists and every flag it passes is one
// that command documents in its --help; the agent gets its node token and the root certificate
// but never the root key or the node secret; the DaemonSet rolls out as the upgrade handoff needs.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseAllDocuments } from 'yaml';
import { describe, expect, it } from 'vitest';
import { commands } from '../../src/cli/commands.js';
import { REPO } from '../helpers/sim.js';

interface Container {
  name: string;
  image?: string;
  args?: string[];
  command?: string[];
  ports?: unknown;
  volumeMounts?: { name: string; mountPath: string }[];
}
interface PodSpec {
  hostNetwork?: boolean;
  terminationGracePeriodSeconds?: number;
  containers: Container[];
  initContainers?: Container[];
  volumes?: { name: string; secret?: { secretName: string; items?: { key: string }[] } }[];
}
interface Obj {
  kind: string;
  metadata: { name: string };
  spec?: { updateStrategy?: unknown; template?: { spec: PodSpec } };
}

const FILE = join(REPO, 'deploy', 'manifests', 'nodemesh.yaml');
const objects = (): Obj[] => parseAllDocuments(readFileSync(FILE, 'utf8')).map((d) => d.toJS() as Obj).filter(Boolean);
const workload = (kind: string) => objects().find((o) => o.kind === kind)!;

function nodemeshContainers(): { owner: string; container: Container }[] {
  return objects().flatMap((o) => {
    const pod = o.spec?.template?.spec;
    return [...(pod?.containers ?? []), ...(pod?.initContainers ?? [])]
      .filter((c) => c.image?.startsWith('nodemesh'))
      .map((container) => ({ owner: `${o.kind}/${o.metadata.name}`, container }));
  });
}

describe('deploy/manifests', () => {
  it('run the agent, install-cni and the control plane, all as the nodemesh CLI (no shell)', () => {
    const all = nodemeshContainers();
    expect(all.map((x) => x.container.args?.[0]).sort()).toEqual(['agent', 'control-plane', 'install-cni', 'install-cni']);
    for (const { container } of all) expect(container.command, container.name).toBeUndefined();
  });

  it('pass only flags their command knows', () => {
    for (const { owner, container } of nodemeshContainers()) {
      const [name, ...args] = container.args ?? [];
      const cmd = commands.find((c) => c.path.length === 1 && c.path[0] === name);
      expect(cmd, `${owner}: container ${container.name} runs unknown command ${String(name)}`).toBeDefined();
      for (const a of args.filter((x) => x.startsWith('--'))) {
        const flag = a.split('=')[0]!;
        expect(cmd!.help, `${owner}: container ${container.name}: ${flag} is not in \`nodemesh ${name} --help\``).toMatch(new RegExp(`(^|\\s)${flag}(\\s|$)`, 'm'));
      }
    }
  });

  it('give the agent its ServiceAccount token and the root certificate, never the root key or a node secret', () => {
    const ds = workload('DaemonSet');
    const text = JSON.stringify(ds);
    const agent = ds.spec!.template!.spec.containers.find((c) => c.name === 'agent')!;
    expect(agent.args).toContain('--token-file=/var/run/secrets/tokens/nodemesh-token');
    expect(agent.args!.some((a) => a.startsWith('--root-cert='))).toBe(true);
    expect(text).not.toMatch(/root-key/);
    expect(text).not.toMatch(/node-secret/);
    // From the bootstrap Secret it mounts root-cert.pem alone.
    const secrets = ds.spec!.template!.spec.volumes!.filter((v) => v.secret);
    expect(secrets.map((v) => v.secret!.items?.map((i) => i.key))).toEqual([['root-cert.pem']]);
    // The control plane is the one that holds the root key; on Kubernetes no node secret exists.
    const cp = workload('Deployment').spec!.template!.spec.containers[0]!;
    expect(cp.args!.some((a) => a.startsWith('--node-secret='))).toBe(false);
    expect(cp.args).toContain('--in-cluster');
    expect(cp.args!.some((a) => a.startsWith('--root-key='))).toBe(true);
  });

  it('roll the agent out as the zero-downtime upgrade needs: surge, no gap, a grace period longer than the drain', () => {
    const ds = workload('DaemonSet');
    expect(ds.spec!.updateStrategy).toEqual({ type: 'RollingUpdate', rollingUpdate: { maxSurge: 1, maxUnavailable: 0 } });
    const pod = ds.spec!.template!.spec;
    const agentArgs = pod.containers.find((c) => c.name === 'agent')!.args!;
    // The drain the agent runs with: its --drain-seconds, else the default from its own help.
    const agent = commands.find((c) => c.path.length === 1 && c.path[0] === 'agent')!;
    const dflt = Number(/--drain-seconds <s>[^(]*\(default (\d+)/.exec(agent.help)?.[1]);
    const given = agentArgs.find((a) => a.startsWith('--drain-seconds='));
    const drain = given ? Number(given.split('=')[1]) : dflt;
    expect(drain).toBeGreaterThan(0);
    expect(pod.terminationGracePeriodSeconds).toBeGreaterThan(drain);
    // hostNetwork turns declared ports into host ports, which would keep the surge pod off the node.
    expect(pod.hostNetwork).toBe(true);
    for (const c of [...pod.containers, ...(pod.initContainers ?? [])]) expect(c.ports, `container ${c.name} declares ports`).toBeUndefined();
  });
});
