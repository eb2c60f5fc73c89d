// Writing a model as a Hugging Face folder (config, weights, tokenizer), e.g. after merging an adapter.
import fs from 'node:fs';
import path from 'node:path';
import { writeDirAtomic, writeFileAtomic } from '../io/atomic.js';
import { saveSafetensors } from '../io/safetensors.js';
import { hfConfigText } from './config.js';
import type { LoadedModel } from './load.js';
import type { Adapter } from '../adapters/adapter.js';
import { mergeIntoWeights } from '../adapters/merge.js';

const TOKENIZER_FILES = [
  'tokenizer.json',
  'tokenizer_config.json',
  'tokenizer.model',
  'special_tokens_map.json',
  'generation_config.json',
];

export function writeMergedModel(
  loaded: Omit<LoadedModel, 'tokenizer'> & { tokenizer: LoadedModel['tokenizer'] | null },
  adapter: Adapter,
  out: string,
  opts: { overwrite?: boolean } = {},
): void {
  const { model, tokenizer } = loaded;
  const { tensors, merged } = mergeIntoWeights(model, adapter);
  try {
    writeDirAtomic(
      out,
      (dir) => {
        writeFileAtomic(path.join(dir, 'config.json'), hfConfigText(model.config, model.dtype));
        saveSafetensors(path.join(dir, 'model.safetensors'), tensors, { format: 'pt', merged_adapter: adapter.name });
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
  } finally {
    for (const t of merged) t.dispose();
  }
}
