// The Kubernetes manifests in deploy/ cannot be applied here (no cluster), so this keeps them
// honest another way: every nodemesh container's command exists, and every flag it passes is
// one that command documents in its --help.
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseAllDocuments } from 'yaml';
import { describe, expect, it } from 'vitest';
import { commands } from '../../src/cli/commands.js';

/** The fields of the agent's DaemonSet that an upgrade depends on. */
interface DaemonSet {
  kind: string;
  spec: { updateStrategy: unknown; template: { spec: { hostNetwork?: boolean; terminationGracePeriodSeconds?: number; containers: (Container & { ports?: unknown })[] } } };
}

const deployDir = join(import.meta.dirname, '..', '..', 'deploy');

interface Container {
  name: string;
  image?: string;
  args?: string[];
  command?: string[];
}

function nodemeshContainers(): { file: string; container: Container }[] {
  const out: { file: string; container: Container }[] = [];
  for (const file of readdirSync(deployDir).filter((f) => f.endsWith('.yaml'))) {
    for (const doc of parseAllDocuments(readFileSync(join(deployDir, file), 'utf8'))) {
      const o = doc.toJS() as { spec?: { template?: { spec?: { containers?: Container[]; initContainers?: Container[] } } } } | null;
      const pod = o?.spec?.template?.spec;
      for (const c of [...(pod?.containers ?? []), ...(pod?.initContainers ?? [])]) {
        // Containers of our image that run the nodemesh CLI (not a shell).
        if (c.image?.startsWith('nodemesh') && !c.command) out.push({ file, container: c });
      }
    }
  }
  return out;
}

describe('deploy/ manifests', () => {
  it('run the agent and the control plane', () => {
    const names = nodemeshContainers().map((x) => x.container.args?.[0]);
    expect(names).toContain('agent');
    expect(names).toContain('control-plane');
  });

  it('pass only flags their command knows', () => {
    for (const { file, container } of nodemeshContainers()) {
      const [name, ...args] = container.args ?? [];
      const cmd = commands.find((c) => c.path.length === 1 && c.path[0] === name);
      expect(cmd, `${file}: container ${container.name} runs unknown command ${String(name)}`).toBeDefined();
      for (const a of args.filter((x) => x.startsWith('--'))) {
        const flag = a.split('=')[0]!;
        expect(cmd!.help, `${file}: container ${container.name}: ${flag} is not in \`nodemesh ${name} --help\``).toMatch(new RegExp(`(^|\\s)${flag}(\\s|$)`, 'm'));
      }
    }
  });

  it('give the agent its node token and the root certificate, never the root key or the node secret', () => {
    const text = readFileSync(join(deployDir, 'agent-daemonset.yaml'), 'utf8');
    expect(text).toMatch(/--token-file=/);
    expect(text).toMatch(/--root-cert=/);
    expect(text).not.toMatch(/root-key/);
    expect(text).not.toMatch(/node-secret/);
    // The control plane is the one that holds the node secret.
    expect(readFileSync(join(deployDir, 'control-plane.yaml'), 'utf8')).toMatch(/--node-secret=/);
  });
  it('roll the agent out as the zero-downtime upgrade needs: surge, no gap, a grace period longer than the drain', () => {
    const ds = parseAllDocuments(readFileSync(join(deployDir, 'agent-daemonset.yaml'), 'utf8')).map((d) => d.toJS() as DaemonSet).find((o) => o?.kind === 'DaemonSet')!;
    expect(ds.spec.updateStrategy).toEqual({ type: 'RollingUpdate', rollingUpdate: { maxSurge: 1, maxUnavailable: 0 } });
    const pod = ds.spec.template.spec;
    // The agent's default --drain-seconds, from its own help text.
    const agent = commands.find((c) => c.path.length === 1 && c.path[0] === 'agent')!;
    const drain = Number(/--drain-seconds <s>[^(]*\(default (\d+)/.exec(agent.help)?.[1]);
    expect(drain).toBeGreaterThan(0);
    expect(pod.terminationGracePeriodSeconds).toBeGreaterThan(drain);
    // hostNetwork turns declared ports into host ports, which would keep the surge pod off the node.
    expect(pod.hostNetwork).toBe(true);
    for (const c of pod.containers) expect(c.ports, `container ${c.name} declares ports`).toBeUndefined();
  });
});
