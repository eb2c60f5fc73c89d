// Loading: sharded checkpoints, compute dtypes, and refusals naming the file or tensor.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { assertClose } from '../helpers/assert.js';
import { referenceDir, tempDir } from '../helpers/fixtures.js';
import { openReferenceModel } from '../helpers/reference-models.js';
import * as T from '../../src/tensor/index.js';
import { loadAll, saveSafetensors } from '../../src/io/safetensors.js';
import { readModelConfig } from '../../src/models/config.js';
import { loadHfWeights } from '../../src/models/weights.js';
import { CausalLM } from '../../src/models/causal-lm.js';
import { checkComputeDType } from '../../src/tensor/targets.js';

function shard(src: string, dir: string): void {
  fs.mkdirSync(dir, { recursive: true });
  fs.copyFileSync(path.join(src, 'config.json'), path.join(dir, 'config.json'));
  const { tensors } = loadAll(path.join(src, 'model.safetensors'));
  const names = [...tensors.keys()];
  const half = Math.ceil(names.length / 2);
  const files = ['model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors'];
  const weightMap: Record<string, string> = {};
  [names.slice(0, half), names.slice(half)].forEach((part, i) => {
    saveSafetensors(path.join(dir, files[i]!), new Map(part.map((n) => [n, tensors.get(n)!])));
    for (const n of part) weightMap[n] = files[i]!;
  });
  fs.writeFileSync(
    path.join(dir, 'model.safetensors.index.json'),
    JSON.stringify({ metadata: {}, weight_map: weightMap }),
  );
  for (const t of tensors.values()) t.dispose();
}

test('a sharded checkpoint (model.safetensors.index.json) gives the same logits', () =>
  T.tidy(() => {
    const { model, ids, logits } = openReferenceModel('llama-gqa-llama3-tied');
    const dir = path.join(tempDir(), 'sharded');
    shard(referenceDir('models', 'llama-gqa-llama3-tied'), dir);
    const config = readModelConfig(path.join(dir, 'config.json'));
    const sharded = new CausalLM(
      config,
      loadHfWeights(dir, config, { dtype: 'float32', device: 'cpu' }),
      'float32',
      'cpu',
    );
    assertClose(
      T.noGrad(() => sharded.forward(ids)),
      logits,
      { atol: 1e-4 },
    );
    sharded.dispose();
    model.dispose();
    ids.dispose();
    logits.dispose();
  }));

test('bfloat16 compute runs and stays close to float32; float16 runs where libtorch can, or is refused clearly', () =>
  T.tidy(() => {
    const dir = referenceDir('models', 'qwen2-bias-tied');
    const config = readModelConfig(path.join(dir, 'config.json'));
    const { ids, logits } = openReferenceModel('qwen2-bias-tied');
    let float16 = true;
    try {
      checkComputeDType('float16', 'cpu', '--dtype');
    } catch (e) {
      float16 = false;
      assert.match((e as Error).message, /cannot compute in float16 on cpu; use bfloat16 or float32/);
    }
    for (const [dtype, tol] of [['bfloat16', 0.5], ...(float16 ? [['float16', 0.1]] : [])] as [
      'bfloat16' | 'float16',
      number,
    ][]) {
      const m = new CausalLM(config, loadHfWeights(dir, config, { dtype, device: 'cpu' }), dtype, 'cpu');
      assert.equal(m.weights.embed.dtype, dtype);
      const out = T.noGrad(() => m.forward(ids));
      assert.equal(out.dtype, 'float32');
      assertClose(out, logits, { atol: tol, what: dtype });
      m.dispose();
    }
    ids.dispose();
    logits.dispose();
  }));

test('a checkpoint that does not match its config is refused naming the tensor', () => {
  const src = referenceDir('models', 'llama-mha-bias');
  const dir = path.join(tempDir(), 'bad');
  fs.mkdirSync(dir);
  const cfg = JSON.parse(fs.readFileSync(path.join(src, 'config.json'), 'utf8'));
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify({ ...cfg, intermediate_size: 50 }));
  fs.copyFileSync(path.join(src, 'model.safetensors'), path.join(dir, 'model.safetensors'));
  const config = readModelConfig(path.join(dir, 'config.json'));
  assert.throws(
    () => loadHfWeights(dir, config, { dtype: 'float32', device: 'cpu' }),
    /tensor 'model\.layers\.0\.mlp\.gate_proj\.weight' has shape \[48, 32\] but config\.json implies \[50, 32\]/,
  );
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify({ ...cfg, num_hidden_layers: 3 }));
  assert.throws(
    () => loadHfWeights(dir, readModelConfig(path.join(dir, 'config.json')), { dtype: 'float32', device: 'cpu' }),
    /has no tensor 'model\.layers\.2\.input_layernorm\.weight'/,
  );
  assert.equal(T.liveTensors() >= 0, true);
});
