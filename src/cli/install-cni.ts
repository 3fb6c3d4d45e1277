// `nodemesh install-cni`: installs (or with --uninstall removes) the nodemesh-cni plugin on this
// node, as the agent DaemonSet's init container does, or keeps it installed (--watch, the
// DaemonSet's install-cni container); a thin command over agent/'s installer.
import { resolve } from 'node:path';
import { installCni, uninstallCni, watchCni } from '../agent/index.js';
import { log } from '../log.js';
import { agentPaths, CNI_PLUGIN_NAME, DEFAULT_CNI_BIN_DIR, DEFAULT_CNI_CONF_DIR, stateDir } from '../net/index.js';
import { parse, usageError, type Command } from './command.js';

const help = `Usage: nodemesh install-cni [options]
       nodemesh install-cni --watch [--on-exit keep|uninstall] [options]
       nodemesh install-cni --uninstall [options]

Installs the ${CNI_PLUGIN_NAME} plugin on this node, as the agent DaemonSet's init container
does: copies the plugin binary into the CNI bin dir and chains
{"type": "${CNI_PLUGIN_NAME}", "agentSocket": "<socket>"} as the LAST plugin of the node's
primary CNI config, which is the first *.conflist, *.conf or *.json of the conf dir by name
(the one the container runtime uses). Every other plugin and field of that config stays; a
single-plugin .conf becomes a .conflist of the same name. Files are written atomically (temp
file + rename), so a pod started meanwhile sees the old config or the new one. Running it
again changes nothing. A conf dir without a config, or a primary config that is not valid, is
an error naming it: the node's primary CNI writes its config first.

With --uninstall, removes every ${CNI_PLUGIN_NAME} entry from the configs of the conf dir and
the binary from the bin dir, leaving everything else as it was: our entry is cut from the
file's text, so a conflist it was appended to reads byte for byte as the primary CNI wrote it
(a .conf that became a .conflist stays a .conflist, without our entry).

With --watch, installs and then keeps running: whenever the primary CNI rewrites its config
(Calico or Cilium do on restart) it chains ${CNI_PLUGIN_NAME} again, within the debounce of an
inotify event, or at the next --check-interval at the latest. A config that is not valid JSON
is reported (naming the file) and never overwritten; it is chained once it is rewritten. On
SIGTERM or SIGINT it stops, and with --on-exit uninstall it first removes the plugin as
--uninstall does. The default, keep, leaves it chained: in an upgrade the next agent pod takes
over, and pods started meanwhile fail closed instead of starting outside the mesh.

Once chained, every pod ADD goes through the agent: with no agent answering on the socket, new
pods fail to start (fail closed) until it runs.

Options:
  --cni-conf-dir <dir>   the node's CNI config dir (default ${DEFAULT_CNI_CONF_DIR})
  --cni-bin-dir <dir>    the node's CNI plugin dir (default ${DEFAULT_CNI_BIN_DIR})
  --agent-socket <path>  the agent's CNI socket the plugin relays to
                         (default <state-dir>/agent/cni.sock)
  --state-dir <dir>      the agent's state dir, for the default socket
                         (default $NODEMESH_STATE_DIR or /run/nodemesh)
  --plugin-binary <file> the plugin binary to copy (default: this package's
                         native/build/${CNI_PLUGIN_NAME})
  --uninstall            remove the plugin instead
  --watch                keep it chained until SIGTERM/SIGINT (the DaemonSet's sidecar loop)
  --on-exit <what>       with --watch, on SIGTERM/SIGINT: keep (default) or uninstall
  --check-interval <s>   with --watch, the periodic check besides inotify (default 10)
  -h, --help             this help
`;

export const installCniCommand: Command = {
  path: ['install-cni'],
  summary: `chain ${CNI_PLUGIN_NAME} into this node's CNI config and install its binary (or --uninstall)`,
  help,
  async run(argv) {
    const { values } = parse(argv, {
      'cni-conf-dir': { type: 'string' },
      'cni-bin-dir': { type: 'string' },
      'agent-socket': { type: 'string' },
      'state-dir': { type: 'string' },
      'plugin-binary': { type: 'string' },
      uninstall: { type: 'boolean' },
      watch: { type: 'boolean' },
      'on-exit': { type: 'string' },
      'check-interval': { type: 'string' },
    }, false);
    const onExit = values['on-exit'] ?? 'keep';
    if (onExit !== 'keep' && onExit !== 'uninstall') throw usageError(`--on-exit must be keep or uninstall, not ${JSON.stringify(onExit)}`);
    const interval = Number(values['check-interval'] ?? 10);
    if (!(Number.isFinite(interval) && interval > 0)) throw usageError('--check-interval must be a positive number of seconds');
    if (values.watch && values.uninstall) throw usageError('--watch and --uninstall do not go together');
    const confDir = resolve(values['cni-conf-dir'] ?? DEFAULT_CNI_CONF_DIR);
    const binDir = resolve(values['cni-bin-dir'] ?? DEFAULT_CNI_BIN_DIR);
    const pluginBinary = values['plugin-binary'] ? { pluginBinary: resolve(values['plugin-binary']) } : {};
    if (values.uninstall) {
      const r = uninstallCni({ confDir, binDir, ...pluginBinary });
      for (const f of r.unchained) process.stderr.write(`install-cni: removed ${CNI_PLUGIN_NAME} from ${f}\n`);
      if (r.removedBinary) process.stderr.write(`install-cni: removed ${r.removedBinary}\n`);
      if (r.unchained.length === 0 && !r.removedBinary) process.stderr.write(`install-cni: ${CNI_PLUGIN_NAME} was not installed in ${confDir} or ${binDir}\n`);
      return 0;
    }
    const agentSocket = resolve(values['agent-socket'] ?? agentPaths(stateDir(values['state-dir'])).cniSocket);
    if (values.watch) {
      const w = watchCni({ confDir, binDir, plugin: { agentSocket }, ...pluginBinary, log, intervalMs: interval * 1000 });
      process.stderr.write(`install-cni: watching ${confDir}; on SIGTERM: ${onExit}\n`);
      await new Promise<void>((done) => {
        const stop = () => {
          process.removeListener('SIGTERM', stop);
          process.removeListener('SIGINT', stop);
          w.stop({ uninstall: onExit === 'uninstall' });
          process.stderr.write(`install-cni: stopped${onExit === 'uninstall' ? `, ${CNI_PLUGIN_NAME} removed` : `, ${CNI_PLUGIN_NAME} left chained`}\n`);
          done();
        };
        process.on('SIGTERM', stop);
        process.on('SIGINT', stop);
      });
      return 0;
    }
    const r = installCni({ confDir, binDir, plugin: { agentSocket }, ...pluginBinary });
    process.stderr.write(`install-cni: ${r.binaryChanged ? 'installed' : 'already installed:'} ${r.binary}\n`);
    process.stderr.write(`install-cni: ${r.confChanged ? 'chained' : 'already chained:'} ${CNI_PLUGIN_NAME} (agent socket ${agentSocket}) into ${r.confFile}\n`);
    return 0;
  },
};
