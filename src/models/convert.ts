// llama2.c checkpoint + tokenizer -> a Hugging Face folder (config.json, model.safetensors,
// tokenizer.json, tokenizer_config.json, generation_config.json), written atomically.
import path from 'node:path';
import { writeDirAtomic, writeFileAtomic } from '../io/atomic.js';
import { saveSafetensors } from '../io/safetensors.js';
import { readLlama2cTokenizer } from '../tokenizer/llama2c.js';
import { spmToTokenizerJson } from '../tokenizer/spm.js';
import { hfConfigText } from './config.js';
import { loadLlama2cWeights, readLlama2cConfig } from './llama2c.js';
import { disposeWeights, flattenWeights } from './weights.js';

/** What convertLlama2c writes in its folder. */
export const LLAMA2C_FOLDER_FILES = [
  'config.json',
  'model.safetensors',
  'tokenizer.json',
  'tokenizer_config.json',
  'generation_config.json',
] as const;

export function convertLlama2c(
  modelFile: string,
  tokenizerFile: string,
  outDir: string,
  opts: { overwrite?: boolean } = {},
): void {
  const { config } = readLlama2cConfig(modelFile);
  const { tokenizer, config: tokConfig } = spmToTokenizerJson(readLlama2cTokenizer(tokenizerFile, config.vocabSize), {
    unk: 0,
    bos: 1,
    eos: 2,
  });
  const weights = loadLlama2cWeights(modelFile, config, { dtype: 'float32', device: 'cpu' });
  try {
    writeDirAtomic(
      outDir,
      (dir) => {
        writeFileAtomic(path.join(dir, 'config.json'), hfConfigText(config));
        saveSafetensors(path.join(dir, 'model.safetensors'), flattenWeights(config, weights), {
          format: 'pt',
          converted_from: 'llama2.c',
        });
        writeFileAtomic(path.join(dir, 'tokenizer.json'), JSON.stringify(tokenizer) + '\n');
        writeFileAtomic(path.join(dir, 'tokenizer_config.json'), JSON.stringify(tokConfig, null, 2) + '\n');
        writeFileAtomic(
          path.join(dir, 'generation_config.json'),
          JSON.stringify({ bos_token_id: 1, eos_token_id: 2 }, null, 2) + '\n',
        );
      },
      { replace: opts.overwrite ?? false },
    );
  } finally {
    disposeWeights(weights);
  }
}
