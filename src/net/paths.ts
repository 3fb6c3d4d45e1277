// The one table of well-known node paths: the state dir, the bpffs pin root, the agent's
// files under the state dir and the node's CNI config and plugin dirs. The C CNI plugin's
// default socket (native/cni/nodemesh-cni.c, DEFAULT_SOCKET) must equal DEFAULT_CNI_SOCKET;
// test/unit/cni-socket.test.ts checks the two agree.
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

/** Where a node's container runtime reads CNI network configs (the primary conflist). */
export const DEFAULT_CNI_CONF_DIR = '/etc/cni/net.d';
/** Where a node's container runtime finds CNI plugin binaries (its CNI_PATH). */
export const DEFAULT_CNI_BIN_DIR = '/opt/cni/bin';
/** Our CNI plugin: its binary's name and its `type` in a conflist. */
export const CNI_PLUGIN_NAME = 'nodemesh-cni';

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
  /** The agent's admin credential (0600): needed for plaintext capture (docs/capture.md). */
  adminToken: string;
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
    adminToken: join(dir, 'admin-token'),
  };
}
