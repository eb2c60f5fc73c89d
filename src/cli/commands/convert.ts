// mixlora convert: a llama2.c checkpoint and tokenizer as a Hugging Face folder, a legacy m-LoRA
// MixLoRA adapter in today's layout, or an adapter's weights as adapter_model.bin (the reference
// tools' torch.save format) or adapter_model.safetensors.
import { Command, Option } from 'commander';
import { UsageError } from '../../util/errors.js';

interface ConvertOptions {
  from?: 'llama2c' | 'mlora-legacy';
  format?: 'bin' | 'safetensors';
  model?: string;
  tokenizer?: string;
  adapter?: string;
  out: string;
  force?: boolean;
}

export function convertCommand(): Command {
  return new Command('convert')
    .description(
      'convert a llama2.c checkpoint (+ tok*.bin) into a Hugging Face folder (--from llama2c), a legacy m-LoRA MixLoRA adapter into the current layout (--from mlora-legacy), or an adapter between adapter_model.safetensors and adapter_model.bin (--format)',
    )
    .addOption(new Option('--from <format>', 'source format').choices(['llama2c', 'mlora-legacy']))
    .addOption(
      new Option(
        '--format <format>',
        "with --adapter: the weights format to write (bin: PyTorch's adapter_model.bin, loadable by torch.load(weights_only=True) and the reference tools; safetensors: adapter_model.safetensors)",
      ).choices(['bin', 'safetensors']),
    )
    .option('--model <file>', 'llama2c: the checkpoint (.bin)')
    .option('--tokenizer <file>', 'llama2c: the tokenizer (tok*.bin)')
    .option('--adapter <dir>', 'mlora-legacy / --format: the adapter folder')
    .requiredOption('--out <dir>', 'output folder (must not exist unless --force)')
    .option('--force', 'replace the output folder if it exists')
    .action(async (o: ConvertOptions) => {
      if (o.from && o.format) throw new UsageError('give --from (a model or legacy adapter) or --format, not both');
      if (o.format) {
        if (!o.adapter) throw new UsageError('--format needs --adapter DIR');
        const { convertAdapterWeights } = await import('../../adapters/files.js');
        const n = await convertAdapterWeights(o.adapter, o.out, o.format, { overwrite: o.force ?? false });
        process.stderr.write(`converted ${n} tensors\n`);
      } else if (o.from === 'llama2c') {
        if (!o.model || !o.tokenizer) throw new UsageError('--from llama2c needs --model FILE and --tokenizer FILE');
        const { convertLlama2c } = await import('../../models/convert.js');
        convertLlama2c(o.model, o.tokenizer, o.out, { overwrite: o.force ?? false });
      } else if (o.from === 'mlora-legacy') {
        if (!o.adapter) throw new UsageError('--from mlora-legacy needs --adapter DIR');
        const { convertLegacyAdapter } = await import('../../adapters/convert-legacy.js');
        const n = await convertLegacyAdapter(o.adapter, o.out, { overwrite: o.force ?? false });
        process.stderr.write(`renamed ${n} tensors\n`);
      } else {
        throw new UsageError('give --from llama2c|mlora-legacy, or --adapter DIR --format bin|safetensors');
      }
      process.stderr.write(`wrote ${o.out}\n`);
    });
}
