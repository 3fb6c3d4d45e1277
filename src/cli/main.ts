#!/usr/bin/env node
// nodemesh CLI entry point: finds the command named by argv and runs it.
import { reportError, type Command } from './command.js';

// `nodemesh agent` is the long-running DaemonSet process: it loads its own command only, not
// every other command's modules (control plane, simulator, demo), which cost it ~5 MB of RSS.
const commands: Command[] = process.argv[2] === 'agent' ? [(await import('./agent.js')).agentCommand] : (await import('./commands.js')).commands;

function topHelp(): string {
  const width = Math.max(...commands.map((c) => c.path.join(' ').length));
  return [
    'nodemesh: a sidecarless (ambient) service mesh; eBPF capture into one proxy per node.',
    '',
    'Usage: nodemesh <command> [options]',
    '',
    'Commands:',
    ...commands.map((c) => `  ${c.path.join(' ').padEnd(width)}  ${c.summary}`),
    '',
    'Run `nodemesh <command> --help` for the options of a command.',
    'State and logs go to $NODEMESH_STATE_DIR (default /run/nodemesh).',
  ].join('\n');
}

export function findCommand(argv: string[]): { cmd: Command; rest: string[] } | undefined {
  let best: { cmd: Command; rest: string[] } | undefined;
  for (const cmd of commands) {
    if (cmd.path.every((w, i) => argv[i] === w) && (!best || cmd.path.length > best.cmd.path.length)) {
      best = { cmd, rest: argv.slice(cmd.path.length) };
    }
  }
  return best;
}

async function main(argv: string[]): Promise<number> {
  if (argv.length === 0 || argv[0] === '--help' || argv[0] === '-h' || argv[0] === 'help') {
    process.stdout.write(topHelp() + '\n');
    return argv.length === 0 ? 2 : 0;
  }
  const found = findCommand(argv);
  if (!found) {
    // A group word alone (`nodemesh sim`) lists its subcommands.
    const group = commands.filter((c) => c.path[0] === argv[0]);
    if (group.length > 0 && argv.length === 1) {
      process.stdout.write(group.map((c) => `  nodemesh ${c.path.join(' ')}  ${c.summary}`).join('\n') + '\n');
      return 0;
    }
    process.stderr.write(`error: unknown command ${JSON.stringify(argv.join(' '))}\n\n${topHelp()}\n`);
    return 2;
  }
  if (found.rest.includes('--help') || found.rest.includes('-h')) {
    const dd = found.rest.indexOf('--');
    const h = Math.max(found.rest.indexOf('--help'), found.rest.indexOf('-h'));
    if (dd === -1 || h < dd) {
      process.stdout.write(found.cmd.help.trimEnd() + '\n');
      return 0;
    }
  }
  try {
    return await found.cmd.run(found.rest);
  } catch (err) {
    return reportError(err);
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    process.exitCode = reportError(err);
  },
);
