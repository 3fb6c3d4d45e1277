// The well-known CNI socket is written down twice: net/'s DEFAULT_CNI_SOCKET, where the agent
// listens by default, and DEFAULT_SOCKET in the C plugin, where it connects when its config
// names no agentSocket. Nothing else ties the two together, so this reads the C source.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { agentPaths, DEFAULT_CNI_SOCKET, DEFAULT_STATE_DIR } from '../../src/net/paths.js';
import { REPO } from '../helpers/sim.js';

const PLUGIN_SOURCE = join(REPO, 'native', 'cni', 'nodemesh-cni.c');

describe('the default CNI socket', () => {
  it("is the same in the C plugin's DEFAULT_SOCKET as in net's DEFAULT_CNI_SOCKET", () => {
    const m = /^\s*#\s*define\s+DEFAULT_SOCKET\s+"([^"]*)"\s*$/m.exec(readFileSync(PLUGIN_SOURCE, 'utf8'));
    expect(m, `${PLUGIN_SOURCE} has no #define DEFAULT_SOCKET "<path>"`).not.toBeNull();
    expect(m![1]).toBe(DEFAULT_CNI_SOCKET);
  });

  it("is the agent's socket under the default state dir", () => {
    expect(agentPaths(DEFAULT_STATE_DIR).cniSocket).toBe(DEFAULT_CNI_SOCKET);
  });
});
