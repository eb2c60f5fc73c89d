// `mixlora bench --json` on the CPU: the preset's shape and dtype, --batch/--seq overrides, model FLOPs,
// and no CUDA memory figures on the CPU (n/a rather than zeros).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import os from 'node:os';
import { mixlora } from '../helpers/cli.js';
import { PRESETS } from '../../src/bench/benchmark.js';
import { trainFlopsPerToken } from '../../src/bench/flops.js';

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
