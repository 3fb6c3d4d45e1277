// install-cni: chains nodemesh-cni into a node's primary CNI conflist and copies its binary into
// the node's CNI bin dir, as the agent DaemonSet's init container does (Istio's install-cni),
// and undoes both. Every write is a temp file and a rename, so a runtime reading the dir at the
// same moment sees the old config or the new one, never half of either.
import { closeSync, existsSync, fchmodSync, fsyncSync, mkdirSync, openSync, readdirSync, readFileSync, realpathSync, renameSync, rmSync, statSync, unlinkSync, writeSync } from 'node:fs';
import { basename, dirname, extname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CniError, isNodemeshError } from '../errors.js';
import { CNI_PLUGIN_NAME } from '../net/index.js';

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

/** The plugin binary this package ships: <package>/native/build/nodemesh-cni. */
export function defaultPluginBinary(): string {
  // src/agent/install-cni.ts or dist/agent/install-cni.js: the package root is two up.
  return join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'native', 'build', CNI_PLUGIN_NAME);
}

/** The network config files of a dir, by name (the order a runtime tries them in). */
function confFiles(confDir: string): string[] {
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

function readConfFile(file: string): CniConfList {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new CniError(`cannot read the CNI config: ${(e as Error).message}`, { where: file, cause: e });
  }
  return parseConfFile(text, file);
}

/** Appends `plugin` as the last plugin of a list, replacing any earlier entry of its type. */
export function chainPlugin(list: CniConfList, plugin: CniPluginConf): CniConfList {
  return { ...list, plugins: [...list.plugins.filter((p) => p.type !== plugin.type), plugin] };
}

/** The list without any plugin of `type`; every other plugin and field stays. */
export function unchainPlugin(list: CniConfList, type: string): CniConfList {
  return { ...list, plugins: list.plugins.filter((p) => p.type !== type) };
}

const render = (list: CniConfList) => JSON.stringify(list, null, 2) + '\n';

/**
 * Writes a file atomically: a temp file in the same dir (a dotfile, which no runtime reads),
 * fsync, rename. A config keeps the mode it had (`mode` is for a new one); a binary always
 * gets `mode`.
 */
function writeAtomic(path: string, data: string | Buffer, mode: number, keepMode = true): void {
  const tmp = join(dirname(path), `.${basename(path)}.tmp-${process.pid}-${Date.now()}`);
  let keep = mode;
  try {
    if (keepMode) keep = statSync(path).mode & 0o7777;
  } catch {
    /* a new file */
  }
  const fd = openSync(tmp, 'w', keep);
  try {
    writeSync(fd, typeof data === 'string' ? Buffer.from(data) : data);
    fchmodSync(fd, keep); // not narrowed by the umask
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  try {
    renameSync(tmp, path);
  } catch (e) {
    rmSync(tmp, { force: true });
    throw e;
  }
}

/** Runs a filesystem step, turning an errno failure into a CniError naming the path. */
function fsStep<T>(what: string, where: string, f: () => T): T {
  try {
    return f();
  } catch (e) {
    if (isNodemeshError(e)) throw e;
    throw new CniError(`cannot ${what}: ${(e as Error).message}`, { where, cause: e });
  }
}

function sameFile(a: string, b: string): boolean {
  try {
    return realpathSync(a) === realpathSync(b);
  } catch {
    return false;
  }
}

export interface InstallCniOptions {
  /** The node's CNI config dir (/etc/cni/net.d): its primary config gets our entry. */
  confDir: string;
  /** The node's CNI plugin dir (/opt/cni/bin): the binary is copied there. */
  binDir: string;
  /** Our entry's fields besides `type`, e.g. `{ agentSocket, timeoutSeconds }`. */
  plugin?: Record<string, unknown>;
  /** The binary to copy (default: defaultPluginBinary()). */
  pluginBinary?: string;
}

export interface InstallCniResult {
  /** The primary config our entry is in (a .conf primary becomes a .conflist). */
  confFile: string;
  /** `<binDir>/nodemesh-cni`. */
  binary: string;
  /** Whether the config and the binary were written (false: they were already as wanted). */
  confChanged: boolean;
  binaryChanged: boolean;
}

/** Copies the plugin binary into binDir (mode 0755) unless it is already there, byte for byte. */
function installBinary(src: string, binDir: string): { binary: string; changed: boolean } {
  const binary = join(binDir, CNI_PLUGIN_NAME);
  if (!existsSync(src)) throw new CniError(`the ${CNI_PLUGIN_NAME} plugin binary is missing; build it with \`make cni\``, { where: src });
  if (sameFile(src, binary)) return { binary, changed: false };
  const data = fsStep('read the plugin binary', src, () => readFileSync(src));
  const current = fsStep('read the installed plugin', binary, () => (existsSync(binary) ? { data: readFileSync(binary), mode: statSync(binary).mode } : undefined));
  if (current && (current.mode & 0o111) !== 0 && current.data.equals(data)) return { binary, changed: false };
  fsStep('install the plugin binary', binary, () => {
    mkdirSync(binDir, { recursive: true });
    writeAtomic(binary, data, 0o755, false);
  });
  return { binary, changed: true };
}

/**
 * Chains our entry into `list` (read from `file`) and writes it, unless it is already chained
 * exactly so. A single-plugin .conf (or .json) cannot hold a list for a runtime, so the list
 * goes to the same name with .conflist, written before the old file is removed: at every
 * moment the runtime's first file is a valid config.
 */
function chainInto(file: string, list: CniConfList, entry: CniPluginConf): { confFile: string; changed: boolean } {
  const chained = chainPlugin(list, entry);
  if (extname(file) === '.conflist') {
    if (render(chained) === render(list)) return { confFile: file, changed: false };
    fsStep('write the CNI config', file, () => writeAtomic(file, render(chained), 0o644));
    return { confFile: file, changed: true };
  }
  const target = file.slice(0, -extname(file).length) + '.conflist';
  if (existsSync(target)) {
    throw new CniError(`the primary CNI config is a single-plugin file and ${target} already exists, so it cannot become a conflist; remove one of the two`, { where: file });
  }
  fsStep('write the CNI config', target, () => writeAtomic(target, render(chained), 0o644));
  fsStep('remove the single-plugin CNI config', file, () => unlinkSync(file));
  return { confFile: target, changed: true };
}

/**
 * Installs nodemesh-cni on a node: copies the binary into `binDir` and chains
 * `{ type: 'nodemesh-cni', ...plugin }` as the LAST plugin of the primary config of `confDir`,
 * replacing an earlier entry of ours and keeping every other plugin and field. Idempotent.
 * A dir with no config, or a primary config that is not valid, is a CniError naming it: the
 * node's primary CNI writes its config first, and we chain into that, never write our own.
 */
export function installCni(o: InstallCniOptions): InstallCniResult {
  const file = findPrimaryConfFile(o.confDir);
  if (!file) {
    throw new CniError(`no CNI network config (*.conflist, *.conf or *.json) in ${o.confDir}: the node's primary CNI plugin writes one, and ${CNI_PLUGIN_NAME} is chained into it`, { where: o.confDir });
  }
  const list = readConfFile(file);
  const { binary, changed: binaryChanged } = installBinary(o.pluginBinary ?? defaultPluginBinary(), o.binDir);
  const { confFile, changed: confChanged } = chainInto(file, list, { ...o.plugin, type: CNI_PLUGIN_NAME });
  return { confFile, binary, confChanged, binaryChanged };
}

export interface UninstallCniOptions {
  confDir: string;
  binDir: string;
  /** Never removed, even when binDir holds it (default: defaultPluginBinary()). */
  pluginBinary?: string;
}

export interface UninstallCniResult {
  /** The configs our entry was removed from. */
  unchained: string[];
  /** `<binDir>/nodemesh-cni` when it was removed. */
  removedBinary?: string;
}

/**
 * Removes every nodemesh-cni entry from the configs of `confDir` (the primary must be valid;
 * another file that cannot be parsed is no runtime's config and is left alone), then the
 * binary from `binDir`. Every other plugin and field stays. Missing dirs are no error, and a
 * second run changes nothing.
 */
export function uninstallCni(o: UninstallCniOptions): UninstallCniResult {
  const unchained: string[] = [];
  confFiles(o.confDir).forEach((file, i) => {
    let list: CniConfList;
    try {
      list = readConfFile(file);
    } catch (e) {
      if (i === 0) throw e;
      return;
    }
    if (!list.plugins.some((p) => p.type === CNI_PLUGIN_NAME)) return;
    fsStep('write the CNI config', file, () => writeAtomic(file, render(unchainPlugin(list, CNI_PLUGIN_NAME)), 0o644));
    unchained.push(file);
  });
  const binary = join(o.binDir, CNI_PLUGIN_NAME);
  if (!existsSync(binary) || sameFile(binary, o.pluginBinary ?? defaultPluginBinary())) return { unchained };
  fsStep('remove the plugin binary', binary, () => unlinkSync(binary));
  return { unchained, removedBinary: binary };
}
