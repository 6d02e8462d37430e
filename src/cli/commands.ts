/**
 * Every command of `diskless`, in the order `diskless help` lists them.
 * Each group lives in src/cli/commands/; the shared pieces in command.ts.
 */
import { CLIENT_COMMANDS } from './commands/clients.js';
import { CONFIG_COMMANDS } from './commands/config.js';
import { IMAGE_COMMANDS } from './commands/images.js';
import { SERVER_COMMANDS } from './commands/server.js';
import type { Command } from './command.js';

export type { Command, Io, RunContext } from './command.js';

export const COMMANDS: readonly Command[] = [...SERVER_COMMANDS, ...IMAGE_COMMANDS, ...CLIENT_COMMANDS, ...CONFIG_COMMANDS];
