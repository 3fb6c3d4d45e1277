// install-cni: chains nodemesh-cni into a node's primary CNI conflist and copies its binary into
// the node's CNI bin dir, as the agent DaemonSet's init container does (Istio's install-cni),
// and undoes both. Every write is a temp file and a rename, so a runtime reading the dir at the
// same moment sees the old config or the new one, never half of either. Our entry is spliced
// into the conflist's text (conflist-edit.ts), so the primary CNI's bytes stay its own.
import { existsSync, mkdirSync, readFileSync, realpathSync, statSync, unlinkSync } from 'node:fs';
import { dirname, extname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { confFiles, findPrimaryConfFile, parseConfFile, type CniConfList, type CniPluginConf } from '../cni/index.js';
import { CniError, isNodemeshError } from '../errors.js';
import { writeFileAtomic } from '../files.js';
import { CNI_PLUGIN_NAME } from '../net/index.js';
import { appendPluginText, removePluginText } from './conflist-edit.js';

/** The plugin binary this package ships: <package>/native/build/nodemesh-cni. */
export function defaultPluginBinary(): string {
  // src/agent/install-cni.ts or dist/agent/install-cni.js: the package root is two up.
  return join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'native', 'build', CNI_PLUGIN_NAME);
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

/** JSON with sorted keys: equal for equal values, whatever the key order. */
const canonical = (v: unknown): string =>
  JSON.stringify(v, (_k, x: unknown) => (x && typeof x === 'object' && !Array.isArray(x) ? Object.fromEntries(Object.entries(x).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) : x));

/** A config file's text and its parse (errors name the file); never a second read of a changing file. */
function readConf(file: string): { text: string; list: CniConfList } {
  const text = fsStep('read the CNI config', file, () => readFileSync(file, 'utf8'));
  return { text, list: parseConfFile(text, file) };
}

/**
 * The text of `want` made by splicing `edit` into `text` when that parses to exactly `want`;
 * otherwise (a config the splice cannot handle) `want` rendered whole. Never invalid JSON.
 */
function editedText(text: string, file: string, want: CniConfList, edit: (t: string) => string | undefined): string {
  const t = edit(text);
  if (t !== undefined) {
    try {
      if (canonical(parseConfFile(t, file)) === canonical(want)) return t;
    } catch {
      /* fall through to a full render */
    }
  }
  return render(want);
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
    writeFileAtomic(binary, data, { mode: 0o755 });
  });
  return { binary, changed: true };
}

/**
 * Chains our entry into `list` (read from `file`) and writes it, unless it is already chained
 * exactly so. A single-plugin .conf (or .json) cannot hold a list for a runtime, so the list
 * goes to the same name with .conflist, written before the old file is removed: at every
 * moment the runtime's first file is a valid config.
 */
function chainInto(file: string, text: string, list: CniConfList, entry: CniPluginConf): { confFile: string; changed: boolean } {
  const chained = chainPlugin(list, entry);
  if (extname(file) === '.conflist') {
    if (canonical(chained) === canonical(list)) return { confFile: file, changed: false };
    const out = editedText(text, file, chained, (t) => appendPluginText(removePluginText(t, entry.type), entry));
    fsStep('write the CNI config', file, () => writeFileAtomic(file, out, { mode: 0o644, keepMode: true }));
    return { confFile: file, changed: true };
  }
  const target = file.slice(0, -extname(file).length) + '.conflist';
  // A conflist of the same name with our entry is our own earlier conversion, which the primary
  // CNI's rewritten .conf now supersedes; anything else there is not ours to replace.
  if (existsSync(target) && !ownConversion(target)) {
    throw new CniError(`the primary CNI config is a single-plugin file and ${target} already exists, so it cannot become a conflist; remove one of the two`, { where: file });
  }
  fsStep('write the CNI config', target, () => writeFileAtomic(target, render(chained), { mode: 0o644, keepMode: true }));
  fsStep('remove the single-plugin CNI config', file, () => unlinkSync(file));
  return { confFile: target, changed: true };
}

function ownConversion(file: string): boolean {
  try {
    return readConf(file).list.plugins.some((p) => p.type === CNI_PLUGIN_NAME);
  } catch {
    return false;
  }
}

/** The CNI capability under which runtimes (containerd, CRI-O) pass a pod's annotations. */
export const POD_ANNOTATIONS_CAPABILITY = 'io.kubernetes.cri.pod-annotations';

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
  const { text, list } = readConf(file);
  const { binary, changed: binaryChanged } = installBinary(o.pluginBinary ?? defaultPluginBinary(), o.binDir);
  // The runtime passes a plugin only the capability args it declares: the pod's annotations
  // (the traffic.sidecar.istio.io exclusions) reach the agent this way, as with containerd.
  const caps = (o.plugin?.capabilities ?? {}) as Record<string, unknown>;
  const entry = { type: CNI_PLUGIN_NAME, ...o.plugin, capabilities: { ...caps, [POD_ANNOTATIONS_CAPABILITY]: true } };
  const { confFile, changed: confChanged } = chainInto(file, text, list, entry);
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
 * second run changes nothing. Our entry's bytes are cut from the text, so a conflist we
 * appended to reads again exactly as the primary CNI wrote it.
 */
export function uninstallCni(o: UninstallCniOptions): UninstallCniResult {
  const unchained: string[] = [];
  confFiles(o.confDir).forEach((file, i) => {
    let conf: { text: string; list: CniConfList };
    try {
      conf = readConf(file);
    } catch (e) {
      if (i === 0) throw e;
      return;
    }
    if (!conf.list.plugins.some((p) => p.type === CNI_PLUGIN_NAME)) return;
    const out = editedText(conf.text, file, unchainPlugin(conf.list, CNI_PLUGIN_NAME), (t) => removePluginText(t, CNI_PLUGIN_NAME));
    fsStep('write the CNI config', file, () => writeFileAtomic(file, out, { mode: 0o644, keepMode: true }));
    unchained.push(file);
  });
  const binary = join(o.binDir, CNI_PLUGIN_NAME);
  if (!existsSync(binary) || sameFile(binary, o.pluginBinary ?? defaultPluginBinary())) return { unchained };
  fsStep('remove the plugin binary', binary, () => unlinkSync(binary));
  return { unchained, removedBinary: binary };
}
