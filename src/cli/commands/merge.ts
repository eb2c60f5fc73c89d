// mixlora merge: fold a LoRA/DoRA adapter into the base weights and write a Hugging Face folder.
import { Command } from 'commander';
import { addModelOptions, openModel, type ModelCliOptions } from '../options.js';

const QUANTIZED_MERGE =
  'merge --quantize: merging writes full-precision weights, and a quantised base keeps only its codes, so W + s·B A would carry the quantisation error into every merged weight; merge into the base loaded as it is (without --quantize): an adapter trained on a quantised base (QLoRA) merges into the full-precision weights';

export function mergeCommand(): Command {
  const cmd = new Command('merge')
    .description(
      'fold a LoRA or DoRA adapter into the base weights, writing a Hugging Face model folder (MixLoRA adapters cannot be folded)',
    )
    .requiredOption('--adapter <dir>', 'LoRA/DoRA adapter folder')
    .requiredOption('--out <dir>', 'output folder (must not exist unless --force)')
    .option('--force', 'replace the output folder if it exists');
  addModelOptions(cmd);
  return cmd.action(async (o: ModelCliOptions & { adapter: string; out: string; force?: boolean }) => {
    const { loadAdapter } = await import('../../adapters/io.js');
    const { writeMergedModel } = await import('../../adapters/merge.js');
    const { UserError } = await import('../../util/errors.js');
    if (o.quantize !== undefined) throw new UserError(QUANTIZED_MERGE);
    // Before the model is loaded: --out is not a file-system root, an input or a folder holding one, and
    // with --force replaces only an earlier merged model.
    const { checkOutputFolder } = await import('../../io/atomic.js');
    const { MODEL_FOLDER_FILES } = await import('../../models/save.js');
    checkOutputFolder(o.out, {
      flag: '--out',
      replace: o.force ?? false,
      owned: MODEL_FOLDER_FILES,
      inputs: [o.model, o.adapter, ...(o.tokenizer ? [o.tokenizer] : [])],
    });
    const loaded = await openModel(o);
    const adapter = await loadAdapter(o.adapter, loaded.model);
    writeMergedModel(loaded, adapter, o.out, { overwrite: o.force ?? false });
    process.stderr.write(`wrote ${o.out}\n`);
  });
}
