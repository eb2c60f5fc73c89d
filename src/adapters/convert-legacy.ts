// Legacy m-LoRA ≤ 0.3 MixLoRA adapters ("routing_strategy": "mixtral", w1/w2/w3 names,
// mixlora.layers.{L}.gate.weight) rewritten in today's layout: adapter_config.json with the reference
// keys and adapter_model.safetensors with the reference tensor names.
import path from 'node:path';
import { noGrad } from '../tensor/autograd.js';
import { tidy } from '../tensor/scope.js';
import { saveSafetensors } from '../io/safetensors.js';
import { writeDirAtomic, writeFileAtomic } from '../io/atomic.js';
import { UserError } from '../util/errors.js';
import { exportAdapterConfig } from './config.js';
import { CONFIG_FILE, readAdapterConfig, readAdapterTensors, WEIGHTS_FILE } from './files.js';
import { modernizeLegacy } from './keys.js';

export async function convertLegacyAdapter(
  src: string,
  out: string,
  opts: { overwrite?: boolean } = {},
): Promise<number> {
  const { config, raw, legacy } = readAdapterConfig(src);
  if (!legacy)
    throw new UserError(
      `${path.join(src, CONFIG_FILE)}: not a legacy m-LoRA adapter (routing_strategy is not "mixtral"); nothing to convert`,
    );
  const { tensors } = await readAdapterTensors(src);
  try {
    const { rename } = modernizeLegacy(raw, [...tensors.keys()])!;
    tidy(() =>
      noGrad(() => {
        const renamed = new Map([...tensors].map(([k, t]) => [rename.get(k) ?? k, t.to('float32')] as const));
        writeDirAtomic(
          out,
          (dir) => {
            writeFileAtomic(path.join(dir, CONFIG_FILE), JSON.stringify(exportAdapterConfig(config), null, 2) + '\n');
            saveSafetensors(path.join(dir, WEIGHTS_FILE), renamed, { format: 'pt', converted_from: 'm-LoRA legacy' });
          },
          { replace: opts.overwrite ?? false },
        );
      }),
    );
    return rename.size;
  } finally {
    for (const t of tensors.values()) t.dispose();
  }
}
