// The subcommands of bin/mixlora, one module each.
import type { Command } from 'commander';

export function registerCommands(program: Command): void {
  void program;
}
