// mixlora convert: a llama2.c checkpoint and tokenizer as a Hugging Face folder.
import { Command, Option } from 'commander';

export function convertCommand(): Command {
  return new Command('convert')
    .description('convert a llama2.c checkpoint and its tok*.bin into a Hugging Face folder (config.json, model.safetensors, tokenizer.json, tokenizer_config.json)')
    .addOption(new Option('--from <format>', 'source format').choices(['llama2c']).makeOptionMandatory())
    .requiredOption('--model <file>', 'llama2.c checkpoint (.bin)')
    .requiredOption('--tokenizer <file>', 'llama2.c tokenizer (tok*.bin)')
    .requiredOption('--out <dir>', 'output folder (must not exist unless --force)')
    .option('--force', 'replace the output folder if it exists')
    .action(async (o: { model: string; tokenizer: string; out: string; force?: boolean }) => {
      const { convertLlama2c } = await import('../../models/convert.js');
      convertLlama2c(o.model, o.tokenizer, o.out, { overwrite: o.force ?? false });
      process.stderr.write(`wrote ${o.out}\n`);
    });
}
