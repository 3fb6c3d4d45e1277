// CNI network configuration as the CNI spec and libcni define it: conflist types, parsing (a
// single-plugin .conf is wrapped into a list, as libcni does), and which file of a config dir a
// runtime uses. Shared by the agent's installer and the simulator's runtime.
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { CniError } from '../errors.js';

/** One plugin's entry in a conflist: `type` plus whatever that plugin reads. */
export interface CniPluginConf {
  type: string;
  capabilities?: Record<string, boolean>;
  [key: string]: unknown;
}

export interface CniConfList {
  cniVersion: string;
  name: string;
  plugins: CniPluginConf[];
  [key: string]: unknown;
}

/** The names a runtime takes as network configs (libcni's ConfFiles, as containerd calls it). */
const CONF_EXT = /\.(conflist|conf|json)$/;

/** The network config files of a dir, by name (the order a runtime tries them in). */
export function confFiles(confDir: string): string[] {
  let names: string[];
  try {
    names = readdirSync(confDir);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw e;
  }
  return names.filter((n) => CONF_EXT.test(n) && !n.startsWith('.')).sort().map((n) => join(confDir, n));
}

/** The primary config: the lexically first *.conflist, *.conf or *.json, the one runtimes use. */
export function findPrimaryConfFile(confDir: string): string | undefined {
  return confFiles(confDir)[0];
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Parses a conflist, or a single-plugin .conf (wrapped into a list, as libcni does); errors name the file. */
export function parseConfFile(text: string, file: string): CniConfList {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new CniError(`CNI config is not valid JSON: ${(e as Error).message}`, { where: file, cause: e });
  }
  if (!isRecord(raw)) throw new CniError('CNI config must be a JSON object', { where: file });
  let list: Record<string, unknown>;
  if (Array.isArray(raw.plugins)) {
    list = raw;
  } else if (typeof raw.type === 'string') {
    const { name, cniVersion, ...plugin } = raw;
    list = { name, cniVersion, plugins: [plugin] };
  } else {
    throw new CniError('CNI config has neither "plugins" (a conflist) nor "type" (a single plugin)', { where: file });
  }
  if (typeof list.name !== 'string' || list.name === '') throw new CniError('CNI config needs a "name"', { where: file });
  if (typeof list.cniVersion !== 'string') throw new CniError('CNI config needs a "cniVersion"', { where: file });
  const plugins = list.plugins as unknown[];
  if (plugins.length === 0) throw new CniError('CNI config lists no plugins', { where: file });
  plugins.forEach((p, i) => {
    if (!isRecord(p) || typeof p.type !== 'string' || !/^[A-Za-z0-9][A-Za-z0-9._-]*$/.test(p.type)) {
      throw new CniError(`plugins[${i}] needs a "type" naming a plugin binary`, { where: file });
    }
  });
  return list as CniConfList;
}

export function readConfFile(file: string): CniConfList {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new CniError(`cannot read the CNI config: ${(e as Error).message}`, { where: file, cause: e });
  }
  return parseConfFile(text, file);
}
