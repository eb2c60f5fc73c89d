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
      if (o.format && !o.adapter) throw new UsageError('--format needs --adapter DIR');
      if (o.from === 'llama2c' && (!o.model || !o.tokenizer))
        throw new UsageError('--from llama2c needs --model FILE and --tokenizer FILE');
      if (o.from === 'mlora-legacy' && !o.adapter) throw new UsageError('--from mlora-legacy needs --adapter DIR');
      if (!o.from && !o.format)
        throw new UsageError('give --from llama2c|mlora-legacy, or --adapter DIR --format bin|safetensors');
      // Before anything is read or written: --out is not a file-system root, not an input nor a folder
      // holding one, and with --force replaces only an earlier output of this conversion.
      const { checkOutputFolder } = await import('../../io/atomic.js');
      const { CONFIG_FILE, WEIGHTS_FILE, TORCH_WEIGHTS_FILE } = await import('../../adapters/files.js');
      const { LLAMA2C_FOLDER_FILES } = await import('../../models/convert.js');
      checkOutputFolder(o.out, {
        flag: '--out',
        replace: o.force ?? false,
        owned:
          o.from === 'llama2c'
            ? LLAMA2C_FOLDER_FILES
            : [CONFIG_FILE, o.format === 'bin' ? TORCH_WEIGHTS_FILE : WEIGHTS_FILE],
        inputs: [o.model, o.tokenizer, o.adapter].filter((f): f is string => f !== undefined),
      });
      if (o.format) {
        const { convertAdapterWeights } = await import('../../adapters/files.js');
        const n = await convertAdapterWeights(o.adapter!, o.out, o.format, { overwrite: o.force ?? false });
        process.stderr.write(`converted ${n} tensors\n`);
      } else if (o.from === 'llama2c') {
        const { convertLlama2c } = await import('../../models/convert.js');
        convertLlama2c(o.model!, o.tokenizer!, o.out, { overwrite: o.force ?? false });
      } else {
        const { convertLegacyAdapter } = await import('../../adapters/convert-legacy.js');
        const n = await convertLegacyAdapter(o.adapter!, o.out, { overwrite: o.force ?? false });
        process.stderr.write(`renamed ${n} tensors\n`);
      }
      process.stderr.write(`wrote ${o.out}\n`);
    });
}
