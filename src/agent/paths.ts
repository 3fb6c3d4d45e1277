// Where the agent keeps its state: one documented directory tree, overridable for tests.
import { join } from 'node:path';

export const DEFAULT_STATE_DIR = '/run/nodemesh';
export const DEFAULT_PIN_ROOT = '/sys/fs/bpf/nodemesh';

export function stateDir(explicit?: string): string {
  return explicit ?? process.env.NODEMESH_STATE_DIR ?? DEFAULT_STATE_DIR;
}

export interface AgentPaths {
  root: string;
  dir: string;
  cniSocket: string;
  podsDir: string;
  pidFile: string;
  logFile: string;
}

export function agentPaths(root = stateDir()): AgentPaths {
  const dir = join(root, 'agent');
  return {
    root,
    dir,
    cniSocket: join(dir, 'cni.sock'),
    podsDir: join(dir, 'pods'),
    pidFile: join(dir, 'agent.pid'),
    logFile: join(dir, 'agent.log'),
  };
}
