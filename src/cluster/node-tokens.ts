// Per-node credentials of the simulated agents, issued at bootstrap as an installer would:
// each node's token is minted from the control plane's node secret, bound to the node's name
// and pod subnet, and written (0600) into that node's own agent dir, so every agent proves
// its own node and no other.
import { hostname } from 'node:os';
import { join } from 'node:path';
import { findPrimaryConfFile, readConfFile } from '../cni/index.js';
import { loadOrCreateNodeSecret, mintNodeToken } from '../controlplane/index.js';
import { writeFileAtomic } from '../files.js';
import { agentPaths } from '../net/index.js';
import { listNodes, nodeCniDirs } from '../sim/index.js';
import { controlPlaneDir } from './daemon.js';

/** The file a node agent reads its token from: `<agent state dir>/agent/node-token`. */
export function nodeTokenFile(agentStateDir: string): string {
  return join(agentPaths(agentStateDir).dir, 'node-token');
}

/**
 * Mints `node`'s token with its pod CIDRs and writes it for its agent; returns the file. The
 * node secret is the control plane's (created here when the control plane has not run yet, so
 * that it then uses the same one).
 */
export function issueNodeToken(sd: string, node: string, podCidrs: string[], agentStateDir: string): string {
  const secret = loadOrCreateNodeSecret(join(controlPlaneDir(sd), 'node-secret'));
  const file = nodeTokenFile(agentStateDir);
  writeFileAtomic(file, mintNodeToken(secret, { node, podCidrs }) + '\n', { mode: 0o600 });
  return file;
}

/** The pod subnet a CNI config dir's primary config hands out (host-local `ranges` or `subnet`). */
function confSubnet(confDir: string): string | undefined {
  const file = findPrimaryConfFile(confDir);
  if (!file) return undefined;
  for (const p of readConfFile(file).plugins) {
    const ipam = p.ipam as { subnet?: unknown; ranges?: { subnet?: unknown }[][] } | undefined;
    const s = ipam?.ranges?.[0]?.[0]?.subnet ?? ipam?.subnet;
    if (typeof s === 'string') return s;
  }
  return undefined;
}

/**
 * The host node of host mode: its name (the simulator's, or the host name it will take) and
 * pod CIDRs (its CNI config's subnet; written first if absent, as sim up would). A config with
 * no subnet accepts any IPv4: with one node there is no other node to impersonate.
 */
export function hostNode(sd: string): { name: string; podCidrs: string[] } {
  const known = listNodes({ stateDir: sd }).find((n) => n.netnsPath === null);
  const subnet = confSubnet(nodeCniDirs(sd).confDir);
  return { name: known?.name ?? hostname(), podCidrs: [subnet ?? '0.0.0.0/0'] };
}
