// The list of CLI commands. Each group lives in its own file.
import { agentCommand } from './agent.js';
import { captureCommand } from './capture.js';
import type { Command } from './command.js';
import { controlPlaneCommands } from './controlplane.js';
import { demoCommand } from './demo.js';
import { doctorCommand } from './doctor.js';
import { installCniCommand } from './install-cni.js';
import { downCommand, kubeletCommand, upCommand } from './up.js';
import { simCommands } from './sim.js';

export const commands: Command[] = [agentCommand, installCniCommand, upCommand, downCommand, demoCommand, doctorCommand, captureCommand, ...simCommands, kubeletCommand, ...controlPlaneCommands];
