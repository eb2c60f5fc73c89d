// Training on a quantised base: LoRA and MixLoRA adapters on an nf4 stories260K reduce their loss (the
// `quantize:` config key, end to end); a fused step leaves no tensor behind; and the backward keeps no
// dequantised weight (measured), while autograd over a composed dequantise-then-linear would keep them all.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import * as T from '../../src/tensor/index.js';
import { loadModel } from '../../src/models/load.js';
import { Adapter } from '../../src/adapters/adapter.js';
import { parseAdapterConfig } from '../../src/adapters/config.js';
import { fusedStep } from '../../src/train/step.js';
import { AdamW } from '../../src/optim/index.js';
import { readTrainConfig } from '../../src/train/config.js';
import { QuantizedWeight } from '../../src/quant/quantized-weight.js';
import { UserError } from '../../src/util/errors.js';
import { STORIES_BIN, STORIES_TOK } from '../helpers/fixtures.js';
import { mixlora } from '../helpers/cli.js';
import { ALL_TARGETS, commonsenseSlice, writeConfig } from '../helpers/train.js';
import { TEST_DEVICE } from '../helpers/device.js';

test('LoRA and MixLoRA adapters trained on an nf4 base (quantize: nf4) reduce their loss', () => {
  const data = commonsenseSlice('boolq.train', 48);
  const common = { data, prompt_template: 'none', lr: 2e-3, batch_size: 8, num_epochs: 2 };
  const c = writeConfig({
    cutoff_len: 256,
    quantize: 'nf4',
    adapters: [
      {
        name: 'lora',
        ...common,
        adapter: { peft_type: 'LORA', r: 8, lora_alpha: 16, lora_dropout: 0, target_modules: ALL_TARGETS },
      },
      {
        name: 'mix',
        ...common,
        adapter: {
          peft_type: 'MIXLORA',
          r: 4,
          lora_alpha: 8,
          lora_dropout: 0,
          target_modules: ALL_TARGETS,
          routing_strategy: 'mixlora',
          num_experts: 4,
          top_k: 2,
        },
      },
    ],
  });
  const r = mixlora(['train', c.file, '--quiet']);
  assert.equal(r.code, 0, r.stderr);
  const lines = fs
    .readFileSync(path.join(c.dir, 'run', 'metrics.jsonl'), 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as { adapter: string; loss: number });
  for (const name of ['lora', 'mix']) {
    const losses = lines.filter((l) => l.adapter === name).map((l) => l.loss);
    assert.equal(losses.length, 12, name);
    const first = (losses[0]! + losses[1]!) / 2;
    const last = (losses[10]! + losses[11]!) / 2;
    assert.ok(last < 0.7 * first, `${name}: loss ${first.toFixed(3)} -> ${last.toFixed(3)}`);
  }
});

test('the training config refuses an unknown quantize value, naming the field', () => {
  const c = writeConfig({
    quantize: 'nf4-dq',
    adapters: [
      { name: 'a', data: commonsenseSlice('boolq.train', 2), adapter: { peft_type: 'LORA', r: 2, lora_alpha: 4 } },
    ],
  });
  assert.throws(
    () => readTrainConfig(c.file),
    (e: unknown) => e instanceof UserError && /quantize.*'nf4-dq' is not a quantisation format/.test(e.message),
  );
});

test('fused steps on an nf4 base (MixLoRA, DoRA; plain and recomputing) leave no tensor behind', () => {
  const { model } = loadModel(STORIES_BIN, { tokenizer: STORIES_TOK, quantize: 'nf4' });
  const mix = Adapter.create(
    'mix',
    parseAdapterConfig(
      {
        peft_type: 'MIXLORA',
        r: 4,
        lora_alpha: 8,
        target_modules: ALL_TARGETS,
        routing_strategy: 'mixlora',
        num_experts: 4,
        top_k: 2,
      },
      'm',
    ),
    model,
  ).requiresGrad_();
  const dora = Adapter.create(
    'dora',
    parseAdapterConfig(
      { peft_type: 'LORA', r: 4, lora_alpha: 8, target_modules: ['q_proj', 'down_proj'], use_dora: true },
      'd',
    ),
    model,
  ).requiresGrad_();
  const opts = [mix, dora].map(
    (a) =>
      new AdamW(
        a.parameters().map((p) => p.tensor),
        { lr: 1e-3 },
      ),
  );
  const ex = (n: number, len: number) =>
    Array.from({ length: n }, (_, i) => {
      const ids = Array.from({ length: len + i }, (_, j) => 3 + ((j * 7 + i * 13) % 500));
      return { inputIds: ids, labels: ids };
    });
  const step = (recompute: boolean) => {
    fusedStep(
      model,
      [
        { adapter: mix, examples: ex(2, 16), stepTokens: 40, microBatchesPerStep: 1 },
        { adapter: dora, examples: ex(2, 20), stepTokens: 40, microBatchesPerStep: 1 },
      ],
      { recompute, padId: 0 },
    );
    for (const o of opts) {
      o.step();
      o.zeroGrad();
    }
  };
  step(false);
  step(true);
  const before = T.liveTensors();
  step(false);
  step(true);
  assert.equal(T.liveTensors(), before);
  opts.forEach((o) => o.dispose());
  mix.dispose();
  dora.dispose();
  model.dispose();
});

test('the backward of a quantised linear keeps no dequantised weight (resident memory measured)', () => {
  // 4 weights [4096, 4096]: 64 MiB each in float32, 9 MiB in nf4. Large allocations are mapped and
  // unmapped whole, so resident memory (CUDA: allocated bytes) follows what autograd keeps.
  const onCuda = TEST_DEVICE !== 'cpu';
  const resident = () => (onCuda ? T.cuda.memoryStats()!.allocated : process.memoryUsage().rss) / 2 ** 20;
  const weights = T.tidy(() => {
    T.manualSeed(1);
    return Array.from({ length: 4 }, () =>
      QuantizedWeight.quantize(T.randn([4096, 4096], { device: TEST_DEVICE }).mul(1 / 64), 'nf4'),
    );
  });
  const held = (dequantiseFirst: boolean) =>
    T.tidy(() => {
      const x = T.randn([2, 4096], { device: TEST_DEVICE }).mul(0.01).requiresGrad_();
      const before = resident();
      let y = x;
      for (const w of weights) y = dequantiseFirst ? T.linear(y, w.dequantize('float32')) : w.linear(y);
      const grown = resident() - before; // the graph is alive: what the backward will need is held
      y.sum().backward();
      return { grown, grad: x.grad!.toNumbers() };
    });
  const composed = held(true);
  const quantised = held(false);
  console.log(
    `# held for the backward: composed ${composed.grown.toFixed(0)} MiB, quantLinear ${quantised.grown.toFixed(0)} MiB`,
  );
  assert.ok(composed.grown > 200, `composed: ${composed.grown.toFixed(0)} MiB (4 × 64 MiB expected)`);
  assert.ok(quantised.grown < 32, `quantLinear: ${quantised.grown.toFixed(0)} MiB`);
  const scale = Math.max(...composed.grad.map(Math.abs));
  const diff = Math.max(...quantised.grad.map((g, i) => Math.abs(g - composed.grad[i]!)));
  assert.ok(diff <= 1e-5 * scale, `input gradients differ by ${diff} (largest ${scale})`);
  for (const w of weights) w.dispose();
});
