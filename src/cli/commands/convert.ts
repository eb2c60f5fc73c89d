// mixlora convert: a llama2.c checkpoint and tokenizer as a Hugging Face folder, or a legacy m-LoRA
// MixLoRA adapter in today's layout.
import { Command, Option } from 'commander';
import { UsageError } from '../../util/errors.js';

interface ConvertOptions {
  from: 'llama2c' | 'mlora-legacy';
  model?: string;
  tokenizer?: string;
  adapter?: string;
  out: string;
  force?: boolean;
}

export function convertCommand(): Command {
  return new Command('convert')
    .description(
      'convert a llama2.c checkpoint (+ tok*.bin) into a Hugging Face folder, or a legacy m-LoRA MixLoRA adapter into the current adapter layout',
    )
    .addOption(
      new Option('--from <format>', 'source format').choices(['llama2c', 'mlora-legacy']).makeOptionMandatory(),
    )
    .option('--model <file>', 'llama2c: the checkpoint (.bin)')
    .option('--tokenizer <file>', 'llama2c: the tokenizer (tok*.bin)')
    .option('--adapter <dir>', 'mlora-legacy: the adapter folder')
    .requiredOption('--out <dir>', 'output folder (must not exist unless --force)')
    .option('--force', 'replace the output folder if it exists')
    .action(async (o: ConvertOptions) => {
      if (o.from === 'llama2c') {
        if (!o.model || !o.tokenizer) throw new UsageError('--from llama2c needs --model FILE and --tokenizer FILE');
        const { convertLlama2c } = await import('../../models/convert.js');
        convertLlama2c(o.model, o.tokenizer, o.out, { overwrite: o.force ?? false });
      } else {
        if (!o.adapter) throw new UsageError('--from mlora-legacy needs --adapter DIR');
        const { convertLegacyAdapter } = await import('../../adapters/convert-legacy.js');
        const n = await convertLegacyAdapter(o.adapter, o.out, { overwrite: o.force ?? false });
        process.stderr.write(`renamed ${n} tensors\n`);
      }
      process.stderr.write(`wrote ${o.out}\n`);
    });
}
