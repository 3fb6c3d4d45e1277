// Paths of the project's own build outputs, resolved from the installed package root.
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';

/** The package root: dist/cli/paths.js → ../.. */
export const packageRoot = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

/** The directory holding the nodemesh-cni binary. */
export function cniPluginPath(): string {
  return join(packageRoot, 'native', 'build');
}

export const cliPath = join(packageRoot, 'bin', 'nodemesh');
