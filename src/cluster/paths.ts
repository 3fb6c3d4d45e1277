// Paths of the project's own build outputs, resolved from the installed package root.
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';

/** The package root: dist/cli/paths.js → ../.. */
export const packageRoot = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

export const cliPath = join(packageRoot, 'bin', 'nodemesh');
