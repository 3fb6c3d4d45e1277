// The one table of well-known node paths: the state dir, the bpffs pin root and the agent's
// files under the state dir. The C CNI plugin's default socket (native/cni/nodemesh-cni.c,
// DEFAULT_SOCKET) must equal DEFAULT_CNI_SOCKET; a unit test checks the two agree.
import { join } from 'node:path';

export const DEFAULT_STATE_DIR = '/run/nodemesh';
export const DEFAULT_PIN_ROOT = '/sys/fs/bpf/nodemesh';
/** Where bpffs is mounted when the node has none. */
export const DEFAULT_BPFFS = '/sys/fs/bpf';
/** The environment variable that overrides DEFAULT_STATE_DIR. */
export const STATE_DIR_ENV = 'NODEMESH_STATE_DIR';

/** The agent's directory under a state dir, and its CNI relay socket under that. */
export const AGENT_DIR = 'agent';
export const CNI_SOCKET_NAME = 'cni.sock';
export const DEFAULT_CNI_SOCKET = join(DEFAULT_STATE_DIR, AGENT_DIR, CNI_SOCKET_NAME);

/** The state dir: the explicit one, else $NODEMESH_STATE_DIR, else /run/nodemesh. */
export function stateDir(explicit?: string): string {
  return explicit ?? process.env[STATE_DIR_ENV] ?? DEFAULT_STATE_DIR;
}

export interface AgentPaths {
  root: string;
  dir: string;
  cniSocket: string;
  podsDir: string;
  pidFile: string;
  logFile: string;
}

/** The agent's files under a state dir. */
export function agentPaths(root = stateDir()): AgentPaths {
  const dir = join(root, AGENT_DIR);
  return {
    root,
    dir,
    cniSocket: join(dir, CNI_SOCKET_NAME),
    podsDir: join(dir, 'pods'),
    pidFile: join(dir, 'agent.pid'),
    logFile: join(dir, 'agent.log'),
  };
}
