// mixlora inspect: an adapter's kind, settings and trainable parameters.
import { Command } from 'commander';

export function inspectCommand(): Command {
  return new Command('inspect')
    .description(
      "show an adapter's kind, settings, trainable parameters (and their share of the base model) per module",
    )
    .argument('<dir>', 'adapter folder')
    .option(
      '--model <path>',
      "base model (folder or llama2.c .bin) for the percentage; default: the adapter's base_model_name_or_path when it exists here",
    )
    .option('--json', 'print the report as JSON')
    .action(async (dir: string, o: { model?: string; json?: boolean }) => {
      const fs = await import('node:fs');
      const { inspectAdapter, formatReport } = await import('../../adapters/inspect.js');
      const { readAdapterConfig } = await import('../../adapters/files.js');
      const { readConfigOf } = await import('../../models/folder.js');
      let base = o.model ?? null;
      if (!base) {
        const guess = readAdapterConfig(dir).config.baseModel;
        if (guess && fs.existsSync(guess)) base = guess;
      }
      const report = await inspectAdapter(dir, base ? readConfigOf(base) : null);
      process.stdout.write(o.json ? JSON.stringify(report, null, 2) + '\n' : formatReport(report) + '\n');
    });
}
