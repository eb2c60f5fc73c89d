// A quantised model against the same model with its projection weights quantised and dequantised by the
// independent reference (test/reference/quant.py) and written out in float32: per-token NLL within 1e-5,
// through both loaders (Hugging Face folder and llama2.c checkpoint) and the perplexity command. Also: what
// stays resident, and merge refusing a quantised base.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import * as T from '../../src/tensor/index.js';
import { convertLlama2c } from '../../src/models/convert.js';
import { loadModel } from '../../src/models/load.js';
import type { CausalLM } from '../../src/models/causal-lm.js';
import { quantizationOf, residentBytes } from '../../src/models/frozen-linear.js';
import { mergeIntoWeights } from '../../src/adapters/merge.js';
import { Adapter } from '../../src/adapters/adapter.js';
import { parseAdapterConfig } from '../../src/adapters/config.js';
import { QuantizedWeight } from '../../src/quant/quantized-weight.js';
import { UserError } from '../../src/util/errors.js';
import { ROOT, STORIES_BIN, STORIES_TOK, tempDir } from '../helpers/fixtures.js';
import { venvPython } from '../helpers/python.js';
import { mixlora } from '../helpers/cli.js';

const hfDir = path.join(tempDir(), 'stories260K');
convertLlama2c(STORIES_BIN, STORIES_TOK, hfDir);

function dequantisedByReference(format: 'nf4' | 'int8'): string {
  const out = path.join(tempDir(), `stories260K-${format}-dequantised`);
  const script = path.join(ROOT, 'test', 'reference', 'quant.py');
  const r = spawnSync(venvPython(), [script, 'dequantise-model', hfDir, out, format], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  return out;
}

// Two rows of token ids from the model's vocabulary (512).
const IDS = [
  Array.from({ length: 24 }, (_, j) => 1 + ((j * 37 + 5) % 511)),
  Array.from({ length: 24 }, (_, j) => 1 + ((j * 101 + 17) % 511)),
];

/** -log p(token t+1 | ..t) for every position of every row. */
function tokenNll(model: CausalLM): number[] {
  return T.tidy(() =>
    T.noGrad(() => {
      const ids = T.tensor(IDS, { dtype: 'int64' }); // [B, T]
      const logp = model
        .forward(ids)
        .logSoftmax(2)
        .narrow(1, 0, IDS[0]!.length - 1); // [B, T-1, V]
      const next = ids.narrow(1, 1, IDS[0]!.length - 1).unsqueeze(2); // [B, T-1, 1]
      return logp.gather(2, next).neg().flatten().toNumbers();
    }),
  );
}

const maxDiff = (a: number[], b: number[]) => Math.max(...a.map((v, i) => Math.abs(v - b[i]!)));

for (const format of ['nf4', 'int8'] as const) {
  test(`${format}: per-token NLL equals the reference-dequantised float32 model within 1e-5 (both loaders)`, () => {
    const dense = loadModel(dequantisedByReference(format)).model;
    const full = loadModel(hfDir).model;
    const fromHf = loadModel(hfDir, { quantize: format }).model;
    const fromBin = loadModel(STORIES_BIN, { tokenizer: STORIES_TOK, quantize: format }).model;
    const expected = tokenNll(dense);
    for (const [name, m] of [
      ['Hugging Face folder', fromHf],
      ['llama2.c checkpoint', fromBin],
    ] as const) {
      assert.equal(quantizationOf(m.weights), format);
      const d = maxDiff(tokenNll(m), expected);
      assert.ok(d <= 1e-5, `${name}: max per-token NLL difference ${d}`);
      console.log(`# ${format}, ${name}: max per-token NLL difference ${d.toExponential(2)}`);
    }
    // The comparison can fail: quantisation moves the NLL away from the full-precision model's.
    const moved = maxDiff(tokenNll(full), expected);
    assert.ok(moved > 1e-4, `quantisation changed the NLL by only ${moved}`);
    console.log(`# ${format}: quantisation moves the per-token NLL by up to ${moved.toFixed(4)}`);
    // Resident: embeddings, norms and the LM head as loaded; every projection quantised.
    for (const l of fromHf.weights.layers)
      for (const p of Object.values(l.proj)) assert.ok(p.weight instanceof QuantizedWeight);
    assert.ok(fromHf.weights.embed instanceof T.Tensor && fromHf.weights.embed.dtype === 'float32');
    const projFloats = fromHf.weights.layers.reduce(
      (n, l) => n + Object.values(l.proj).reduce((k, p) => k + p.weight.numel, 0),
      0,
    );
    const perWeight = format === 'nf4' ? 0.5 + 4 / 64 : 1; // (the int8 scales: 4 bytes per row, on top)
    const saved = residentBytes(full.weights) - residentBytes(fromHf.weights);
    assert.ok(saved >= projFloats * (4 - perWeight) - 4 * 4096, `saved ${saved} bytes of ${projFloats} weights`);
    for (const m of [dense, full, fromHf, fromBin]) m.dispose();
  });
}

test('the perplexity command with --quantize nf4 reports the reference-dequantised model’s perplexity', () => {
  const data = path.join(tempDir(), 'ppl.jsonl');
  fs.writeFileSync(data, IDS.map((ids) => JSON.stringify({ input_ids: ids })).join('\n') + '\n');
  const run = (args: string[]) => {
    const r = mixlora(['perplexity', '--data', data, '--json', ...args]);
    assert.equal(r.code, 0, r.stderr);
    return JSON.parse(r.stdout).mean_nll as number;
  };
  const quantised = run(['--model', hfDir, '--quantize', 'nf4']);
  const dense = run(['--model', dequantisedByReference('nf4')]);
  assert.ok(Math.abs(quantised - dense) <= 1e-5, `${quantised} vs ${dense}`);
});

test('bad --quantize values and merging into a quantised base are refused, saying why', () => {
  const bad = mixlora(['perplexity', '--model', hfDir, '--data', 'x.jsonl', '--quantize', 'fp4']);
  assert.equal(bad.code, 2); // bad usage
  assert.match(bad.stderr, /--quantize: 'fp4' is not a quantisation format \(nf4, int8\)/);
  const merge = mixlora(['merge', '--model', hfDir, '--adapter', hfDir, '--out', tempDir(), '--quantize', 'nf4']);
  assert.equal(merge.code, 1);
  assert.match(merge.stderr, /merging writes full-precision weights/);
  const { model } = loadModel(hfDir, { quantize: 'nf4' });
  const lora = Adapter.create(
    'lora',
    parseAdapterConfig({ peft_type: 'LORA', r: 2, lora_alpha: 4, target_modules: ['q_proj'] }, 'lora'),
    model,
  );
  assert.throws(
    () => mergeIntoWeights(model, lora),
    (e: unknown) => e instanceof UserError && /cannot merge into a base quantised to nf4/.test(e.message),
  );
  lora.dispose();
  model.dispose();
});
