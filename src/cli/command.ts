// The shape every CLI command has, and the shared argument parsing and error reporting.
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { isNodemeshError, NodemeshError, UsageError } from '../errors.js';

export interface Command {
  /** Words after `nodemesh`, e.g. ['sim', 'up']. */
  path: string[];
  summary: string;
  /** Full help text: usage line, description, options. */
  help: string;
  /** Returns the exit code. */
  run(argv: string[]): Promise<number>;
}

export type Options = NonNullable<ParseArgsConfig['options']>;

/** parseArgs with our error code; `--help` is always accepted and reported as `help: true`. */
export function parse<O extends Options>(argv: string[], options: O, allowPositionals = true) {
  try {
    return parseArgs({
      args: argv,
      options: { ...options, help: { type: 'boolean', short: 'h' } },
      allowPositionals,
      strict: true,
    });
  } catch (cause) {
    throw new UsageError((cause as Error).message, { cause });
  }
}

export function usageError(message: string): NodemeshError {
  return new UsageError(message);
}

/** Prints an error for an operator: the message, its code, and nothing else unless DEBUG. */
export function reportError(err: unknown): number {
  if (isNodemeshError(err)) {
    process.stderr.write(`error: ${err.message}\n  (${err.code})\n`);
    if (process.env.NODEMESH_DEBUG && err.cause) process.stderr.write(`${String((err.cause as Error).stack ?? err.cause)}\n`);
    return err.code === 'NM_ERR_USAGE' ? 2 : 1;
  }
  process.stderr.write(`error: ${(err as Error)?.stack ?? String(err)}\n`);
  return 1;
}
