// Mixed precision on the CPU (`dtype: bfloat16`): the demo's fused MixLoRA + LoRA run over stories260K with the
// base model, activations and matmuls in bfloat16 (`bf16_compute: native`; adapter weights, optimizer state,
// router and losses in float32) follows the float32 run's loss curve, and so does the run that keeps the base's
// weights in bfloat16 but computes in float32 (`bf16_compute: float32`, what a CPU without bfloat16 arithmetic
// runs). Examples cut at 256 tokens (the demo's 384 made this the suite's longest test: bfloat16 products run
// at a fraction of float32's speed on CPUs without bfloat16 hardware). Tolerance, per adapter over the first 16
// steps: the relative difference of the per-step losses at most 8% on average, and of the losses averaged over
// any 4 consecutive steps at most 15%. Measured (AMD EPYC Zen 3, PyTorch 2.13 backend, float32 products through
// oneDNN, at the test's learning rate 1e-3), native bfloat16: MixLoRA 0.2% / 0.3%, LoRA 2.1% / 3.1% (single
// steps up to 14%: bfloat16 keeps 8 bits of mantissa, stories260K's hidden size is 64, and the two runs'
// weights drift apart); float32 over bfloat16 weights: MixLoRA 0.3% / 0.4%, LoRA 0.5% / 0.7%. At the demo's
// 2e-3 the LoRA run spikes and the figures were 3-7% / 4-19% depending on the backend's float32 summation
// order.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { mixlora } from '../helpers/cli.js';
import { ROOT, tempDir } from '../helpers/fixtures.js';

const STEPS = 16;

function run(dir: string, dtype: string, bf16Compute?: 'native' | 'float32'): Map<string, number[]> {
  const name = bf16Compute ? `${dtype}-${bf16Compute}` : dtype;
  const demo = fs.readFileSync(path.join(ROOT, 'examples', 'demo', 'train.yaml'), 'utf8');
  const abs = (p: string) => path.join(ROOT, 'examples', 'demo', p);
  const config = demo
    .replace(/\.\.\/\.\.\/[^\s,\]]+/g, (p) => abs(p))
    .replace(/^output_dir: .*$/m, `output_dir: ${path.join(dir, name)}`)
    .replace(/^save_steps: .*$/m, `dtype: ${dtype}${bf16Compute ? `\nbf16_compute: ${bf16Compute}` : ''}`)
    .replace(/max_steps: 60/g, `max_steps: ${STEPS}`)
    .replace(/batch_size: 16/g, 'batch_size: 8')
    .replace(/^cutoff_len: .*$/m, 'cutoff_len: 256')
    // Half the demo's learning rate: at 2e-3 the LoRA run (r 80 over hidden 64) spikes (losses 0.5 -> 1.4 ->
    // 0.5 within three steps), and where a spike lands depends on float32 rounding too (its sums' order:
    // oneDNN or the BLAS), so the comparison would measure the spikes, not the precision.
    .replace(/lr: 2\.0e-3/g, 'lr: 1.0e-3');
  const file = path.join(dir, `${name}.yaml`);
  fs.writeFileSync(file, config);
  const r = mixlora(['train', file], { env: { MIXLORA_NUM_THREADS: '1' } });
  assert.equal(r.code, 0, r.stderr);
  // The training log says how the base computes, and why.
  if (bf16Compute === 'native') assert.match(r.stderr, /base model: bfloat16 weights, activations and products: asked/);
  if (bf16Compute === 'float32')
    assert.match(r.stderr, /base model: bfloat16 weights, float32 activations and products .*: asked/);
  const curves = new Map<string, number[]>();
  const lines = fs
    .readFileSync(path.join(dir, name, 'metrics.jsonl'), 'utf8')
    .trim()
    .split('\n');
  for (const line of lines) {
    const m = JSON.parse(line) as { adapter: string; loss: number };
    curves.set(m.adapter, [...(curves.get(m.adapter) ?? []), m.loss]);
  }
  return curves;
}

test('dtype bfloat16: the demo run follows the float32 loss curve (both adapters, both compute modes)', (t) => {
  const dir = tempDir();
  try {
    const f32 = run(dir, 'float32');
    for (const mode of ['native', 'float32'] as const) {
      const bf16 = run(dir, 'bfloat16', mode);
      for (const name of ['mixlora', 'lora']) {
        const a = f32.get(name)!;
        const b = bf16.get(name)!;
        assert.equal(a.length, STEPS);
        assert.equal(b.length, STEPS);
        // Per step, and over windows of 4 steps (single steps wobble: the two runs see the same batches but
        // their weights drift apart).
        const rel = a.map((x, i) => Math.abs(b[i]! - x) / x);
        const window = (c: number[], i: number) => c.slice(i, i + 4).reduce((t, v) => t + v, 0) / 4;
        const windows = Array.from(
          { length: STEPS - 3 },
          (_, i) => Math.abs(window(b, i) - window(a, i)) / window(a, i),
        );
        const mean = rel.reduce((s, v) => s + v, 0) / rel.length;
        const worst = Math.max(...rel);
        const worstWindow = Math.max(...windows);
        t.diagnostic(
          `${name}, bfloat16 computing ${mode === 'native' ? 'in bfloat16' : 'in float32'}: relative loss ` +
            `difference per step: mean ${mean.toExponential(2)}, worst ${worst.toExponential(2)}; ` +
            `worst 4-step window ${worstWindow.toExponential(2)}`,
        );
        assert.ok(mean <= 0.08, `${name} (${mode}): mean ${mean}`);
        assert.ok(worstWindow <= 0.15, `${name} (${mode}): worst 4-step window ${worstWindow}`);
        assert.ok(b[STEPS - 1]! < b[0]!, `${name} (${mode}): bfloat16 loss went from ${b[0]} to ${b[STEPS - 1]}`);
      }
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
