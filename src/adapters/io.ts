// Loading and saving adapter folders (files.ts names the files and reads them raw; state-dict.ts maps
// their tensors to the parameter tree). Loading checks every tensor's name and shape against the base
// model.
import path from 'node:path';
import { noGrad } from '../tensor/autograd.js';
import { tidy } from '../tensor/scope.js';
import { writeDirAtomic, writeFileAtomic } from '../io/atomic.js';
import type { CausalLM } from '../models/causal-lm.js';
import { Adapter } from './adapter.js';
import { exportAdapterConfig, withModelActivation } from './config.js';
import {
  CONFIG_FILE,
  readAdapterConfig,
  readAdapterTensors,
  TORCH_WEIGHTS_FILE,
  WEIGHTS_FILE,
  writeWeights,
  type WeightsFormat,
} from './files.js';
import { modernizeLegacy } from './keys.js';
import { adapterElementCount } from './params.js';
import { adapterStateDict, buildLayers } from './state-dict.js';

/** Loads an adapter for `model`, checking names and shapes; DoRA magnitudes missing from the file are
 * initialised from the loaded weights (the reference's behaviour). */
export async function loadAdapter(
  dir: string,
  model: CausalLM,
  name = path.basename(path.resolve(dir)),
): Promise<Adapter> {
  const { config: parsed, raw } = readAdapterConfig(dir);
  const { tensors, file } = await readAdapterTensors(dir, { maxElements: adapterElementCount(parsed, model.config) });
  const legacy = modernizeLegacy(raw, [...tensors.keys()]);
  if (legacy) {
    for (const [from, to] of legacy.rename) {
      tensors.set(to, tensors.get(from)!);
      tensors.delete(from);
    }
  }
  try {
    const config = withModelActivation(parsed, model.config.hiddenAct);
    return new Adapter(name, config, buildLayers(config, model, tensors, file));
  } finally {
    for (const t of tensors.values()) t.dispose();
  }
}

/** Writes adapter_config.json + adapter_model.safetensors (and/or adapter_model.bin, per `formats`)
 * into `dir` (replaced atomically). */
export function saveAdapter(
  dir: string,
  a: Adapter,
  opts: { baseModel?: string | null; formats?: readonly WeightsFormat[] } = {},
): void {
  const config = { ...a.config, baseModel: opts.baseModel ?? a.config.baseModel };
  tidy(() =>
    noGrad(() => {
      const tensors = new Map(
        [...adapterStateDict(a)].map(
          ([k, t]) => [k, t.detach().to({ dtype: 'float32', device: 'cpu' }).contiguous()] as const,
        ),
      );
      writeDirAtomic(
        dir,
        (tmp) => {
          writeFileAtomic(path.join(tmp, CONFIG_FILE), JSON.stringify(exportAdapterConfig(config), null, 2) + '\n');
          for (const f of opts.formats ?? ['safetensors']) writeWeights(tmp, f, tensors);
        },
        // Replacing a previous save: only our own files may be in the folder.
        { replace: true, owned: [CONFIG_FILE, WEIGHTS_FILE, TORCH_WEIGHTS_FILE] },
      );
    }),
  );
}
