// bin/mixlora: parses the command line and runs one command. stdout carries only results; logs and
// progress go to stderr. Exit codes: 0 ok, 1 bad input or failure, 2 bad usage.
import { Command, CommanderError } from 'commander';
import { UsageError, UserError } from '../util/errors.js';
import { packageVersion } from '../util/package.js';
import { registerCommands } from './commands.js';

export function buildProgram(): Command {
  const program = new Command('mixlora')
    .description('Fine-tune LLaMA-family, Gemma and Phi-3 models with MixLoRA, LoRA and DoRA adapters on libtorch')
    .version(packageVersion(), '-V, --version')
    .showHelpAfterError('(run with --help for usage)')
    .exitOverride()
    // `mixlora launch ... train CONFIG --resume`: options after the launched command are that command's.
    .enablePositionalOptions();
  registerCommands(program);
  return program;
}

export async function main(argv: string[]): Promise<void> {
  const program = buildProgram();
  try {
    checkCommandName(program, argv);
    // A rank of `mixlora launch` ends itself if the launcher is killed (src/distributed/lifeline.ts).
    if (process.env.MIXLORA_LAUNCHER_PID) await (await import('../distributed/lifeline.js')).watchLauncher();
    await program.parseAsync(argv, { from: 'user' });
  } catch (e) {
    process.exitCode = exitCodeFor(e);
  }
}

/** The command named on the line must exist, with or without --help after it (commander alone would
 * print the main help and exit 0 for `mixlora typo --help`). `help <command>` is checked the same way. */
function checkCommandName(program: Command, argv: string[]): void {
  const names = program.commands.flatMap((c) => [c.name(), ...c.aliases()]);
  const [first, second] = argv.filter((a) => !a.startsWith('-'));
  const asked = first === 'help' ? second : first;
  if (asked !== undefined && !names.includes(asked))
    throw new UsageError(`unknown command '${asked}' (the commands are ${names.join(', ')})`);
}

function exitCodeFor(e: unknown): number {
  if (e instanceof CommanderError) {
    // Help and version exit 0; commander has already printed usage errors.
    return e.exitCode === 0 ? 0 : 2;
  }
  if (e instanceof UsageError) {
    process.stderr.write(`mixlora: ${e.message}\n(run with --help for usage)\n`);
    return 2;
  }
  if (e instanceof UserError) {
    process.stderr.write(`mixlora: ${e.message}\n`);
    return 1;
  }
  const err = e instanceof Error ? e : new Error(String(e));
  process.stderr.write(`mixlora: ${err.message}\n`);
  if (process.env.MIXLORA_DEBUG) process.stderr.write(`${err.stack}\n`);
  return 1;
}
