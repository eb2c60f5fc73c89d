// The GPU check's arithmetic: model FLOPs of the llama2-7b preset, the bf16 peak table and the targets.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PRESETS } from '../../src/bench/benchmark.js';
import { matmulWeights, trainFlopsPerToken } from '../../src/bench/flops.js';
import { peakTflops, targetRows, type BenchRow } from '../../bench/gpu-report.js';

test('llama2-7b preset: its weights add up to LLaMA-2-7B’s published 6,738,415,616 parameters', () => {
  const p = PRESETS['llama2-7b'];
  const embedding = p.vocab * p.hidden;
  const norms = p.layers * 2 * p.hidden + p.hidden;
  assert.equal(matmulWeights(p) + embedding + norms, 6_738_415_616);
  // 4 FLOPs per frozen weight (forward + input gradient) and 12·h·T per layer of attention.
  assert.equal(trainFlopsPerToken(p, 512), 4 * matmulWeights(p) + 12 * 4096 * 512 * 32);
});

test('bf16 peak: table by device name, else the measured probe', () => {
  assert.equal(peakTflops('NVIDIA H200', 5e5).tflops, 989);
  assert.equal(peakTflops('NVIDIA H100 PCIe', 5e5).tflops, 756);
  assert.equal(peakTflops('NVIDIA A100-SXM4-80GB', 5e5).tflops, 312);
  const unknown = peakTflops('Some GPU', 123_000);
  assert.equal(unknown.tflops, 123);
  assert.match(unknown.source, /measured/);
});

test('targets: ratios from the runs, n/a where a run or a CUDA counter is missing', () => {
  const row = (impl: string, method: string, fused: number, ms: number, mem: number | null): BenchRow => ({
    method,
    fused,
    impl,
    label: method,
    batch: 4,
    seq: 512,
    ms_per_step: ms * 2048 * fused,
    ms_per_token: ms,
    tokens_per_s: 1000 / ms,
    peak_rss_mib: 1000,
    peak_cuda_allocated_mib: mem,
    peak_cuda_reserved_mib: mem,
    model_flops_per_token: 1e9,
    model_tflops: 1e9 / (ms / 1000) / 1e12,
  });
  const rows = [
    row('mixlora', 'lora', 1, 0.01, 100),
    row('mixlora', 'mixlora', 1, 0.012, 100),
    row('mixlora', 'mixlora', 2, 0.009, 120),
    row('pytorch-eager', 'mixlora', 1, 0.024, 300),
  ];
  const t = targetRows(rows, { tflops: 250, source: 'test' }, true);
  assert.deepEqual(
    t.map((x) => [x.value, x.met]),
    [
      ['2.00×', true], // 83.3 / 41.7 tokens/s
      ['1.20×', true], // 0.012 / 0.010 ms
      ['0.60×', true], // 120 / (2 × 100) MiB
      ['0.75×', true], // 0.009 / 0.012 ms
      ['40.0%', true], // 100 / 250 TFLOP/s
    ],
  );
  const noCounters = targetRows(
    rows.map((r) => ({ ...r, peak_cuda_allocated_mib: null })),
    { tflops: 1, source: 'test' },
    true,
  );
  assert.deepEqual([noCounters[2]!.value, noCounters[2]!.met], ['n/a', null]);
});
