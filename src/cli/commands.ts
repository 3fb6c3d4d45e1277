// The list of CLI commands. Each group lives in its own file.
import type { Command } from './command.js';

export const commands: Command[] = [];
