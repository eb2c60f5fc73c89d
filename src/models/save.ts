// Writing a model as a Hugging Face folder (config, weights, tokenizer), e.g. after merging an adapter
// (adapters/merge.ts folds the adapter into the tensors written here).
import fs from 'node:fs';
import path from 'node:path';
import { writeDirAtomic, writeFileAtomic } from '../io/atomic.js';
import { saveSafetensors } from '../io/safetensors.js';
import { hfConfigText } from './config.js';
import type { LoadedModel } from './load.js';
import type { Tensor } from '../tensor/tensor.js';

const TOKENIZER_FILES = [
  'tokenizer.json',
  'tokenizer_config.json',
  'tokenizer.model',
  'special_tokens_map.json',
  'generation_config.json',
];
/** Every file writeModelFolder may write. */
export const MODEL_FOLDER_FILES: readonly string[] = ['config.json', 'model.safetensors', ...TOKENIZER_FILES];

/** Writes `tensors` (Hugging Face names) as the weights of `loaded`'s model, with its config and tokenizer;
 * `metadata` joins the safetensors header. */
export function writeModelFolder(
  loaded: Omit<LoadedModel, 'tokenizer' | 'compute'> & { tokenizer: LoadedModel['tokenizer'] | null },
  tensors: Map<string, Tensor>,
  out: string,
  opts: { overwrite?: boolean; metadata?: Record<string, string> } = {},
): void {
  const { model, tokenizer } = loaded;
  writeDirAtomic(
    out,
    (dir) => {
      writeFileAtomic(path.join(dir, 'config.json'), hfConfigText(model.config, model.weightDType));
      saveSafetensors(path.join(dir, 'model.safetensors'), tensors, { format: 'pt', ...opts.metadata });
      if (loaded.format === 'hf') {
        for (const f of TOKENIZER_FILES) {
          const src = path.join(loaded.path, f);
          if (fs.existsSync(src)) fs.copyFileSync(src, path.join(dir, f));
        }
      } else if (tokenizer) {
        writeFileAtomic(path.join(dir, 'tokenizer.json'), JSON.stringify(tokenizer.tokenizerJson) + '\n');
        writeFileAtomic(path.join(dir, 'tokenizer_config.json'), JSON.stringify(tokenizer.config, null, 2) + '\n');
      }
    },
    { replace: opts.overwrite ?? false },
  );
}
