// Training on a quantised base: LoRA and MixLoRA adapters on an nf4 stories260K reduce their loss (the
// `quantize:` config key, end to end); a fused step leaves no tensor behind; and the backward keeps no
// dequantised weight (measured), while autograd over a composed dequantise-then-linear would keep them all.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import * as T from '../../src/tensor/index.js';
import { loadModel } from '../../src/models/load.js';
import { readTrainConfig } from '../../src/train/config.js';
import { QuantizedWeight } from '../../src/quant/quantized-weight.js';
import { UserError } from '../../src/util/errors.js';
import { STORIES_BIN, STORIES_TOK } from '../helpers/fixtures.js';
import { mixlora } from '../helpers/cli.js';
import { assertFusedStepsLeaveNoTensor } from '../helpers/fused-steps.js';
import { LORA_ADAPTER, commonsenseSlice, mixloraAdapter, readMetrics, writeConfig } from '../helpers/train.js';
import { TEST_DEVICE } from '../helpers/device.js';

test('LoRA and MixLoRA adapters trained on an nf4 base (quantize: nf4) reduce their loss', () => {
  const data = commonsenseSlice('boolq.train', 48);
  const common = { data, prompt_template: 'none', lr: 2e-3, batch_size: 8, num_epochs: 2 };
  const c = writeConfig({
    cutoff_len: 256,
    quantize: 'nf4',
    adapters: [
      { name: 'lora', ...common, adapter: LORA_ADAPTER },
      { name: 'mix', ...common, adapter: mixloraAdapter() },
    ],
  });
  const r = mixlora(['train', c.file, '--quiet']);
  assert.equal(r.code, 0, r.stderr);
  const lines = readMetrics(path.join(c.dir, 'run'));
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
  assertFusedStepsLeaveNoTensor(
    model,
    { mixlora: {}, mixExamples: [2, 16], doraExamples: [2, 20], unscoredPrefix: 0, stepTokens: 40 },
    1,
  );
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
