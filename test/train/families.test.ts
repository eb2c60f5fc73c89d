// `mixlora train` on the tiny Gemma 2 and Phi-3 folders of test/reference/families.py: a LoRA and a MixLoRA
// adapter trained together (Gemma 2 with activations recomputed per layer) both lower the training loss on a
// small repeated token set (the mean of the last 3 steps' losses under 0.7 × the first), the MixLoRA adapter's
// file names the base model's activation, and each saved adapter loads back onto the model and changes its
// logits.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { referenceDir, tempDir } from '../helpers/fixtures.js';
import { openModel } from '../helpers/reference-adapters.js';
import { trainConfig } from '../helpers/train.js';
import * as T from '../../src/tensor/index.js';
import { train } from '../../src/train/trainer.js';
import { loadAdapter } from '../../src/adapters/io.js';
import { AdapterBatch } from '../../src/adapters/batch.js';

const FAMILIES = [
  {
    model: 'gemma2-window-softcap',
    attention: ['q_proj', 'v_proj', 'o_proj'],
    mlp: ['gate_proj', 'up_proj', 'down_proj'],
  },
  { model: 'phi3-partial-rotary', attention: ['qkv_proj', 'o_proj'], mlp: ['gate_up_proj', 'down_proj'] },
];

/** 8 sequences of 12 tokens from a vocabulary of 61, each a fixed pattern worth learning. */
function tokenData(): string {
  const file = path.join(tempDir(), 'tokens.jsonl');
  const rows = Array.from({ length: 8 }, (_, r) =>
    JSON.stringify({ input_ids: Array.from({ length: 12 }, (_, j) => 3 + ((j * 7 + r * 5) % 50)) }),
  );
  fs.writeFileSync(file, rows.join('\n') + '\n');
  return file;
}

for (const fam of FAMILIES) {
  test(`${fam.model}: LoRA and MixLoRA training lower the loss; the saved adapters load back`, async () => {
    const data = tokenData();
    const common = { data, prompt_template: 'none', lr: 1e-2, batch_size: 4, num_epochs: 8 };
    const cfg = trainConfig({
      base_model: referenceDir('models', fam.model),
      tokenizer: null,
      cutoff_len: 32,
      recompute: fam.model.startsWith('gemma2'),
      adapters: [
        {
          name: 'lora',
          adapter: { peft_type: 'LORA', r: 4, lora_alpha: 8, target_modules: [...fam.attention, ...fam.mlp] },
          ...common,
        },
        {
          name: 'mix',
          adapter: {
            peft_type: 'MIXLORA',
            r: 4,
            lora_alpha: 8,
            target_modules: [...fam.attention, ...fam.mlp],
            routing_strategy: 'mixlora',
            num_experts: 3,
            top_k: 2,
          },
          ...common,
        },
      ],
    });
    await train(cfg);
    const metrics = fs
      .readFileSync(path.join(cfg.outputDir, 'metrics.jsonl'), 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { adapter: string; loss: number });
    for (const name of ['lora', 'mix']) {
      const losses = metrics.filter((m) => m.adapter === name).map((m) => m.loss);
      assert.equal(losses.length, 16, `${name}: one metrics line per step`);
      const last = losses.slice(-3).reduce((a, b) => a + b) / 3;
      assert.ok(last < 0.7 * losses[0]!, `${name}: loss ${losses[0]} -> ${last} (mean of the last 3) fell too little`);
      console.log(`# ${fam.model} ${name}: loss ${losses[0]!.toFixed(3)} -> ${last.toFixed(3)}`);
    }
    const saved = JSON.parse(fs.readFileSync(path.join(cfg.outputDir, 'mix', 'adapter_config.json'), 'utf8'));
    assert.equal(saved.act_fn, fam.model.startsWith('gemma') ? 'gelu_pytorch_tanh' : 'silu');

    const model = openModel(referenceDir('models', fam.model));
    for (const name of ['lora', 'mix']) {
      const adapter = await loadAdapter(path.join(cfg.outputDir, name), model, name);
      T.tidy(() =>
        T.noGrad(() => {
          const ids = T.tensor([[3, 10, 17, 24, 31, 38, 45, 52]], { dtype: 'int64' });
          const adapted = model.forward(ids, { hooks: AdapterBatch.all(adapter, { training: false }) });
          const plain = model.forward(ids);
          assert.ok(adapted.sub(plain).abs().amax().item() > 1e-3, `${name}: the trained adapter changes the logits`);
        }),
      );
      adapter.dispose();
    }
    model.dispose();
  });
}
