// `mixlora bench --profile`: one step's time by op family adds up to the step's wall time, and the families
// see what the method runs (GEMMs always; the router's ops only with MixLoRA). The FLOP count of the
// adapters follows its formula (src/bench/flops.ts) on a hand-checked shape.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mixlora } from '../helpers/cli.js';
import { FAMILIES, opFamily } from '../../src/bench/step-profile.js';
import { adapterFlopsPerToken } from '../../src/bench/flops.js';
import { profileOps } from '../../src/tensor/profiler.js';
import * as T from '../../src/tensor/index.js';

const family = (j: { profile: { families: { family: string; ms: number }[] } }, f: string) =>
  j.profile.families.find((x) => x.family === f)!.ms;

for (const method of ['lora', 'mixlora']) {
  test(`bench --profile --method ${method}: families cover the step, GEMMs and (MixLoRA) routing recorded`, () => {
    const args = ['bench', '--preset', 'llama-tiny', '--method', method, '--steps', '1', '--warmup', '0'];
    const r = mixlora([...args, '--batch', '1', '--seq', '16', '--profile', '--json'], {
      env: { MIXLORA_NUM_THREADS: '1' },
    });
    assert.equal(r.code, 0, r.stderr);
    const j = JSON.parse(r.stdout.trim().split('\n').pop()!);
    assert.deepEqual(
      j.profile.families.map((f: { family: string }) => f.family),
      [...FAMILIES],
    );
    const total = j.profile.families.reduce((s: number, f: { ms: number }) => s + f.ms, 0);
    // Self times never overlap, so the families (host time included) add up to the wall time.
    assert.ok(Math.abs(total - j.profile.wallMs) < 0.01 * j.profile.wallMs, `${total} vs ${j.profile.wallMs}`);
    assert.ok(family(j, 'GEMM') > 0);
    assert.ok(family(j, 'optimizer') > 0);
    assert.equal(family(j, 'router, gather/scatter') > 0, true); // the embedding lookup at least
    const topk = j.profile.ops.find((o: { name: string }) => o.name === 'aten::topk');
    if (method === 'mixlora') assert.equal(topk?.family, 'router, gather/scatter');
    else assert.equal(topk, undefined);
  });
}

test('profileOps: self times of nested ops are not counted twice; recording stops after an error', () => {
  const a = T.randn([64, 64]);
  const p = profileOps(() => T.tidy(() => a.matmul(a).sum().item()));
  const mm = [...p.ops].filter(([n]) => n.endsWith('mm') || n.endsWith('matmul'));
  assert.ok(mm.length > 0, [...p.ops.keys()].join(','));
  const self = [...p.ops.values()].reduce((s, o) => s + o.selfMs, 0);
  assert.ok(self <= p.wallMs + 1e-6);
  assert.throws(() => profileOps(() => T.tidy(() => a.matmul(T.randn([3, 3])))));
  // A second profile can start: the failed one was stopped.
  const again = profileOps(() => 1);
  assert.equal(again.result, 1);
  a.dispose();
});

test('opFamily: names of libtorch 1.13 and 2.x ops', () => {
  assert.equal(opFamily('aten::mm'), 'GEMM');
  assert.equal(opFamily('mkldnn::_linear_pointwise'), 'GEMM');
  assert.equal(opFamily('aten::addmm'), 'GEMM');
  assert.equal(opFamily('aten::_scaled_dot_product_flash_attention_for_cpu'), 'attention');
  assert.equal(opFamily('aten::index_add_'), 'router, gather/scatter');
  assert.equal(opFamily('aten::topk'), 'router, gather/scatter');
  assert.equal(opFamily('aten::_log_softmax'), 'loss (log-softmax, NLL)');
  assert.equal(opFamily('aten::_to_copy'), 'copies, casts and allocation');
  assert.equal(opFamily('MmBackward0'), 'autograd engine');
  assert.equal(opFamily('autograd::engine::evaluate_function: MmBackward0'), 'autograd engine');
  assert.equal(opFamily('aten::silu'), 'elementwise and reductions');
});

test('adapterFlopsPerToken: LoRA on q (H→H) and MixLoRA top-2 on gate (H→I) plus the router', () => {
  const p = { vocab: 10, hidden: 8, intermediate: 20, layers: 3, heads: 2, kvHeads: 1 };
  assert.equal(adapterFlopsPerToken(p, { r: 2, targets: ['q_proj'] }), 3 * 6 * 2 * (8 + 8));
  assert.equal(adapterFlopsPerToken(p, { r: 2, targets: ['k_proj'] }), 3 * 6 * 2 * (8 + 4));
  assert.equal(
    adapterFlopsPerToken(p, { r: 2, targets: ['gate_proj'], experts: { count: 4, topK: 2 } }),
    3 * (2 * 6 * 2 * (8 + 20) + 6 * 8 * 4),
  );
});
