// `mixlora bench --json` on the CPU: the preset's shape and dtype, --batch/--seq overrides, model FLOPs,
// and no CUDA memory figures on the CPU (n/a rather than zeros).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import os from 'node:os';
import { mixlora } from '../helpers/cli.js';
import { PRESETS } from '../../src/bench/benchmark.js';
import { matmulWeights, trainFlopsPerToken } from '../../src/bench/flops.js';

test('bench --preset llama-tiny --json: shape, dtype, overrides, FLOPs, no CUDA counters on the CPU', () => {
  const args = ['bench', '--preset', 'llama-tiny', '--method', 'mixlora', '--steps', '1', '--warmup', '0', '--json'];
  const r = mixlora([...args, '--batch', '1', '--seq', '16'], { env: { MIXLORA_NUM_THREADS: '1' } });
  assert.equal(r.code, 0, r.stderr);
  const j = JSON.parse(r.stdout.trim().split('\n').pop()!);
  assert.equal(j.preset, 'llama-tiny');
  assert.deepEqual([j.batch, j.seq, j.dtype, j.device, j.fused], [1, 16, 'bfloat16', 'cpu', 1]);
  assert.equal(j.model_flops_per_token, trainFlopsPerToken(PRESETS['llama-tiny'], 16));
  assert.ok(Math.abs(j.ms_per_token - j.ms_per_step / 16) < 1e-9 * j.ms_per_step);
  assert.equal(j.peak_cuda_allocated_mib, null);
  assert.equal(j.peak_cuda_reserved_mib, null);
  const bad = mixlora([...args, '--preset', 'llama-3t']);
  assert.equal(bad.code, 2);
});

test('bench --optimizer adamw8bit --optimizer-in-backward --recompute runs and says so; without --recompute it is refused', () => {
  const args = ['bench', '--preset', 'llama-tiny', '--method', 'mixlora', '--steps', '1', '--warmup', '0', '--json'];
  const memory = ['--optimizer', 'adamw8bit', '--optimizer-in-backward'];
  const r = mixlora([...args, ...memory, '--recompute'], { env: { MIXLORA_NUM_THREADS: '1' } });
  assert.equal(r.code, 0, r.stderr);
  const j = JSON.parse(r.stdout.trim().split('\n').pop()!);
  assert.deepEqual([j.optimizer, j.optimizer_in_backward, j.recompute], ['adamw8bit', true, true]);
  const bad = mixlora([...args, ...memory]);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /--optimizer-in-backward needs --recompute/);
});

test(
  'bench --preset llama2-7b on a CPU with less than twice its 12.6 GiB of weights: refused before allocating',
  {
    skip: os.totalmem() >= 2 * 6_738_415_616 * 2 ? 'this machine has the memory' : false,
  },
  () => {
    const r = mixlora(['bench', '--preset', 'llama2-7b', '--method', 'lora', '--json']);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /llama2-7b: its weights alone take 12\.6 GiB/);
  },
);

test('bench --shard-base --plan: the bytes per rank of LLaMA-2-70B in nf4, from its published shape; usage errors', () => {
  // The 13B and 70B presets add up to their published parameter counts.
  for (const [name, published] of [
    ['llama2-13b', 13_015_864_320],
    ['llama2-70b', 68_976_648_192],
  ] as const) {
    const p = PRESETS[name];
    assert.equal(matmulWeights(p) + p.vocab * p.hidden + (2 * p.layers + 1) * p.hidden, published, name);
  }
  const r = mixlora(['bench', '--preset', 'llama2-70b', '--quantize', 'nf4', '--shard-base', '--plan', '--json']);
  assert.equal(r.code, 0, r.stderr);
  const j = JSON.parse(r.stdout) as {
    whole_bytes: number;
    ranks: { ranks: number; perRankBytes: number; gatheredBytes: number; peakBytes: number }[];
  };
  const p = PRESETS['llama2-70b'];
  const vh = p.vocab * p.hidden;
  // nf4 projections: 4 bits and a float32 absmax per 64 values; embeddings, LM head and norms in bfloat16.
  const whole = 0.5625 * (matmulWeights(p) - vh) + 2 * (2 * vh + (2 * p.layers + 1) * p.hidden);
  assert.equal(j.whole_bytes, whole);
  assert.deepEqual(
    j.ranks.map((row) => row.ranks),
    [1, 2, 4, 8],
  );
  for (const row of j.ranks) {
    assert.ok(row.perRankBytes >= whole / row.ranks && row.perRankBytes < whole / row.ranks + 1e4, `${row.ranks}`);
    // Whole at once: the head (LM head, final norm) and the last layer, gathered ahead for its recomputed backward.
    const layer = (0.5625 * (matmulWeights(p) - vh)) / p.layers + 2 * 2 * p.hidden;
    assert.equal(row.gatheredBytes, 2 * vh + 2 * p.hidden + layer);
    assert.equal(row.peakBytes, row.perRankBytes + row.gatheredBytes);
  }
  const text = mixlora(['bench', '--preset', 'llama2-70b', '--quantize', 'nf4', '--shard-base', '--plan']);
  assert.match(text.stdout, /^ +8 +4\.60 GiB +0\.94 GiB +5\.54 GiB$/m);
  const noShard = mixlora(['bench', '--preset', 'llama-1b', '--plan']);
  assert.equal(noShard.code, 2);
  assert.match(noShard.stderr, /--plan needs --shard-base/);
  const noRecompute = mixlora(['bench', '--preset', 'llama-tiny', '--method', 'lora', '--shard-base']);
  assert.equal(noRecompute.code, 2);
  assert.match(noRecompute.stderr, /--shard-base needs --recompute/);
  const noMethod = mixlora(['bench', '--preset', 'llama-tiny']);
  assert.equal(noMethod.code, 2);
  assert.match(noMethod.stderr, /--method/);
});
