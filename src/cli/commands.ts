// The subcommands of bin/mixlora, one module each.
import type { Command } from 'commander';
import { benchCommand } from './commands/bench.js';
import { convertCommand } from './commands/convert.js';
import { evalCommand } from './commands/eval.js';
import { generateCommand } from './commands/generate.js';
import { infoCommand } from './commands/info.js';
import { launchCommand } from './commands/launch.js';
import { inspectCommand } from './commands/inspect.js';
import { mergeCommand } from './commands/merge.js';
import { perplexityCommand } from './commands/perplexity.js';
import { serveCommand } from './commands/serve.js';
import { studioCommand } from './commands/studio.js';
import { trainCommand } from './commands/train.js';

export function registerCommands(program: Command): void {
  for (const make of [
    trainCommand,
    launchCommand,
    evalCommand,
    generateCommand,
    serveCommand,
    studioCommand,
    perplexityCommand,
    inspectCommand,
    mergeCommand,
    convertCommand,
    benchCommand,
    infoCommand,
  ]) {
    program.addCommand(make().exitOverride().showHelpAfterError('(run with --help for usage)'));
  }
}
