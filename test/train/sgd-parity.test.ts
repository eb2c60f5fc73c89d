// One SGD step from a saved adapter equals the step computed by the independent PyTorch reference
// (θ - lr·∇(CE + aux)), max abs diff ≤ 2e-5: PEFT LoRA, DoRA, MixLoRA and MixDoRA (magnitudes trained).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { referenceDir, tempDir } from '../helpers/fixtures.js';
import { adapterTensors } from '../helpers/train.js';
import * as T from '../../src/tensor/index.js';
import { loadAll } from '../../src/io/safetensors.js';
import { readTrainConfig } from '../../src/train/config.js';
import { train } from '../../src/train/trainer.js';

const LR = 0.5;

for (const name of ['lora', 'dora-rslora', 'mixlora', 'mixdora', 'mixlora-switch']) {
  test(`one SGD step equals the PyTorch reference: ${name}`, async () => {
    const dir = referenceDir('adapters', name);
    const expected = loadAll(path.join(dir, 'expected.safetensors')).tensors;
    const ids = expected.get('input_ids')!.toList() as number[][];
    const labels = expected.get('labels')!.toList() as number[][];
    const work = tempDir();
    const data = path.join(work, 'data.jsonl');
    fs.writeFileSync(
      data,
      ids.map((row, i) => JSON.stringify({ input_ids: row, labels: labels[i] })).join('\n') + '\n',
    );
    const cfgFile = path.join(work, 'train.json');
    fs.writeFileSync(
      cfgFile,
      JSON.stringify({
        base_model: path.join(dir, 'model'),
        output_dir: path.join(work, 'run'),
        seed: 1,
        cutoff_len: 64,
        adapters: [
          {
            name,
            init_from: path.join(dir, 'adapter'),
            data,
            optimizer: 'sgd',
            lr: LR,
            batch_size: ids.length,
            micro_batch_size: ids.length,
            max_steps: 1,
          },
        ],
      }),
    );
    await train(readTrainConfig(cfgFile));
    const before = loadAll(path.join(dir, 'adapter', 'adapter_model.safetensors')).tensors;
    const after = adapterTensors(path.join(work, 'run', name));
    let worst = 0;
    T.tidy(() => {
      for (const [key, t] of after) {
        const grad = expected.get(`grad.${key}`);
        assert.ok(grad, `no reference gradient for ${key}`);
        const start = before.get(key) ?? null;
        if (!start) {
          assert.ok(key.endsWith('lora_magnitude_vector'), `unexpected ${key}`);
          continue;
        }
        const want = start.sub(grad.mul(LR));
        const d = t.sub(want).abs().amax().item();
        worst = Math.max(worst, d);
        assert.ok(d <= 2e-5, `${key}: max abs diff ${d.toExponential(2)} > 2e-5`);
      }
    });
    console.log(`# ${name}: worst parameter difference after one SGD step ${worst.toExponential(2)}`);
  });
}
