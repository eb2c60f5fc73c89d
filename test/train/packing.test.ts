// Packing (packing: true): a micro-batch's whole examples share rows of up to cutoff_len tokens, attention stays
// within each example and positions restart at each; the loss, the routing and the load-balance loss see exactly
// the tokens they see unpacked. Proof: a packed step gives every example's loss and every adapter gradient of
// the padded step, within 1e-5 (LoRA, MixLoRA, MixDoRA, dynamic and switch routing; rows holding 1, 2 and 9
// examples; plain and recomputing passes; fused with unpacked adapters; sliding windows and soft-capping).
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { STORIES_BIN, STORIES_TOK } from '../helpers/fixtures.js';
import { openReferenceModel } from '../helpers/reference-models.js';
import { randomAdapter } from '../helpers/test-adapters.js';
import {
  DORA_ADAPTER,
  LORA_ADAPTER,
  adapterTensors,
  commonsenseSlice,
  maxDiff,
  mixloraAdapter,
  readMetrics,
  trainConfig,
} from '../helpers/train.js';
import { train } from '../../src/train/trainer.js';
import { loadModel } from '../../src/models/load.js';
import { CausalLM } from '../../src/models/causal-lm.js';
import type { Adapter } from '../../src/adapters/adapter.js';
import { IGNORE_INDEX, scoredTokens, type Example } from '../../src/data/examples.js';
import { packRows, trainingRows } from '../../src/data/packing.js';
import { segmentMask } from '../../src/nn/mask.js';
import { fusedStep, type MicroResult } from '../../src/train/step.js';

const TOL = 1e-5;

/** An example of `len` tokens (ids from `seed`) whose first two labels are not scored. */
function example(len: number, seed: number, vocab: number): Example {
  const inputIds = Array.from({ length: len }, (_, j) => 3 + ((j * 37 + seed * 101 + ((j * seed) % 7)) % (vocab - 3)));
  return { inputIds, labels: inputIds.map((t, j) => (j < Math.min(2, len - 2) ? IGNORE_INDEX : t)) };
}

/** Lengths that pack into rows of 64 as [64], [40, 24] and [12, 10, 9, 8, 7, 6, 5, 4, 3], given out of order. */
const LENGTHS = [7, 40, 3, 64, 12, 5, 24, 10, 4, 9, 8, 6];

const examples = (lengths: number[], vocab: number, offset = 0) =>
  lengths.map((len, i) => example(len, i + 1 + offset, vocab));

interface Run {
  results: MicroResult[];
  grads: Map<string, Float32Array>;
}

/** One fused step of the adapters over their micro-batches (packed to `packTo[i]`, or padded when undefined);
 * the results and every gradient, keyed adapter/parameter; gradients are cleared after. */
function step(
  model: CausalLM,
  adapters: Adapter[],
  batches: Example[][],
  packTo: (number | undefined)[],
  recompute = false,
): Run {
  const results = fusedStep(
    model,
    adapters.map((adapter, i) => ({
      adapter,
      examples: batches[i]!,
      stepTokens: batches[i]!.reduce((n, e) => n + scoredTokens(e), 0),
      microBatchesPerStep: 1,
      ...(packTo[i] !== undefined ? { packTo: packTo[i] } : {}),
    })),
    { recompute, padId: 0 },
  );
  const grads = new Map<string, Float32Array>();
  for (const a of adapters)
    for (const p of a.parameters()) {
      const g = p.tensor.grad;
      grads.set(`${a.name}/${p.name}`, g ? g.toFloat32Array() : new Float32Array(p.tensor.numel));
      p.tensor.grad = null;
    }
  return { results, grads };
}

/** Packed and padded agree within TOL in every loss and gradient; returns the largest differences. */
function assertSame(t: TestContext, what: string, padded: Run, packed: Run): void {
  let loss = 0;
  padded.results.forEach((r, i) => {
    const q = packed.results[i]!;
    assert.equal(q.scoredTokens, r.scoredTokens);
    assert.equal(q.inputTokens, r.inputTokens);
    loss = Math.max(loss, Math.abs(q.ce - r.ce));
    assert.equal(q.aux === null, r.aux === null, `${what}: aux present in one only`);
    if (r.aux !== null) loss = Math.max(loss, Math.abs(q.aux! - r.aux));
  });
  let grad = 0;
  let scale = 0;
  let nonzero = 0;
  for (const [name, g] of padded.grads) {
    const h = packed.grads.get(name)!;
    for (let i = 0; i < g.length; i++) {
      grad = Math.max(grad, Math.abs(g[i]! - h[i]!));
      scale = Math.max(scale, Math.abs(g[i]!));
      if (g[i] !== 0) nonzero++;
    }
  }
  t.diagnostic(
    `${what}: max |Δloss| ${loss.toExponential(2)}, max |Δgrad| ${grad.toExponential(2)} (max |grad| ${scale.toExponential(2)})`,
  );
  assert.ok(nonzero > 0, `${what}: no gradient at all`);
  assert.ok(loss <= TOL, `${what}: losses differ by ${loss}`);
  assert.ok(grad <= TOL, `${what}: gradients differ by ${grad}`);
}

test('packRows packs first-fit decreasing with the least padding; trainingRows restarts positions and keeps targets in their example', () => {
  assert.deepEqual(
    packRows(LENGTHS, 64).map((row) => row.map((i) => LENGTHS[i])),
    [[64], [40, 24], [12, 10, 9, 8, 7, 6, 5, 4, 3]],
  );
  assert.throws(() => packRows([65], 64), /exceeds the row capacity 64/);
  // The row length that leaves the least padding: one row of 250 beats three of 100 ...
  assert.deepEqual(packRows([100, 60, 40, 30, 20], 256), [[0, 1, 2, 3, 4]]);
  // ... and among equal padding the shorter rows (less attention): equal lengths stay one a row.
  assert.deepEqual(packRows([10, 10, 10, 10], 64), [[0], [1], [2], [3]]);
  // Never more row slots than one example a row, and every example exactly once.
  let seed = 11;
  const rand = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
  for (let trial = 0; trial < 200; trial++) {
    const lengths = Array.from({ length: 1 + Math.floor(rand() * 16) }, () => 1 + Math.floor(rand() * 200));
    const rows = packRows(lengths, 256);
    const fill = rows.map((row) => row.reduce((n, i) => n + lengths[i]!, 0));
    assert.ok(Math.max(...fill) <= 256);
    assert.ok(rows.length * Math.max(...fill) <= lengths.length * Math.max(...lengths));
    assert.deepEqual(
      rows.flat().sort((a, b) => a - b),
      lengths.map((_, i) => i),
    );
  }
  const a = { inputIds: [5, 6, 7], labels: [-100, 6, 7] };
  const b = { inputIds: [8, 9], labels: [8, 9] };
  const c = { inputIds: [4], labels: [4] };
  const r = trainingRows([[a, b], [c]], 0, 'cpu');
  assert.deepEqual(r.ids.toList(), [
    [5, 6, 7, 8, 9],
    [4, 0, 0, 0, 0],
  ]);
  assert.deepEqual(r.targets.toList(), [
    [6, 7, -100, 9, -100],
    [-100, -100, -100, -100, -100],
  ]);
  assert.deepEqual(r.mask!.toList(), [
    [1, 1, 1, 1, 1],
    [1, 0, 0, 0, 0],
  ]);
  assert.deepEqual(r.segments!.segments.toList(), [
    [1, 1, 1, 2, 2],
    [1, 0, 0, 0, 0],
  ]);
  assert.deepEqual(r.segments!.positions.toList(), [
    [0, 1, 2, 0, 1],
    [0, 0, 0, 0, 0],
  ]);
  // One example a row: no segments (the padded batch exactly).
  assert.equal(trainingRows([[a], [b]], 0, 'cpu').segments, null);
  // The mask is block-diagonal causal; a window of 2 keeps the key before the query.
  const m = segmentMask(r.segments!.segments, null).toList() as boolean[][][][];
  assert.deepEqual(
    m[0]![0]!.map((row) => row.map(Number)),
    [
      [1, 0, 0, 0, 0],
      [1, 1, 0, 0, 0],
      [1, 1, 1, 0, 0],
      [0, 0, 0, 1, 0],
      [0, 0, 0, 1, 1],
    ],
  );
  assert.deepEqual(
    (segmentMask(r.segments!.segments, 2).toList() as boolean[][][][])[0]![0]![2]!.map(Number),
    [0, 1, 1, 0, 0],
  );
  // Padding queries see only themselves.
  assert.deepEqual(m[1]![0]!.map((row) => row.map(Number))[3], [0, 0, 0, 1, 0]);
});

test('packed equals padded per example within 1e-5: LoRA, DoRA, MixLoRA, MixDoRA, top-p and switch routing', (t) => {
  const { model } = loadModel(STORIES_BIN, { tokenizer: STORIES_TOK });
  const batch = examples(LENGTHS, 512);
  const cases: [string, Record<string, unknown>][] = [
    ['LoRA', LORA_ADAPTER],
    ['DoRA', DORA_ADAPTER],
    ['MixLoRA (top-2, aux 0.01)', mixloraAdapter({ router_aux_loss_coef: 0.01 })],
    ['MixDoRA', mixloraAdapter({ use_dora: true, router_aux_loss_coef: 0.01 })],
    ['MixLoRA top-p', mixloraAdapter({ routing_strategy: 'mixlora-dynamic', top_p: 0.6, router_aux_loss_coef: 0.01 })],
    [
      // capacity 3 per example: packed rows must count it per example, not per row
      'MixLoRA switch (capacity 3, z-loss)',
      mixloraAdapter({
        routing_strategy: 'mixlora-switch',
        top_k: 1,
        expert_capacity: 3,
        jitter_noise: 0,
        router_init_range: 1.0,
        router_aux_loss_coef: 0.01,
        router_z_loss_coef: 0.001,
      }),
    ],
  ];
  for (const [name, cfg] of cases) {
    const a = randomAdapter('a', cfg, model, { seed: 7, std: 0.05 }).requiresGrad_();
    for (const recompute of [false, true]) {
      const padded = step(model, [a], [batch], [undefined], recompute);
      const packed = step(model, [a], [batch], [64], recompute);
      assertSame(t, `${name}${recompute ? ', recompute' : ''}`, padded, packed);
    }
    a.dispose();
  }
  model.dispose();
});

test('fused: packed and padded adapters in one step, each as it is alone and unpacked; micro-batches of 1 and 2', (t) => {
  const { model } = loadModel(STORIES_BIN, { tokenizer: STORIES_TOK });
  const lora = randomAdapter('lora', LORA_ADAPTER, model, { seed: 1, std: 0.05 }).requiresGrad_();
  const mix = randomAdapter('mix', mixloraAdapter({ router_aux_loss_coef: 0.01 }), model, {
    seed: 2,
    std: 0.05,
  }).requiresGrad_();
  const mixdora = randomAdapter('mixdora', mixloraAdapter({ use_dora: true, router_aux_loss_coef: 0.01 }), model, {
    seed: 3,
    std: 0.05,
  }).requiresGrad_();
  const adapters = [lora, mix, mixdora];
  const batches = [examples(LENGTHS, 512), examples([30, 33, 17, 9], 512, 50), examples([50, 14], 512, 90)];
  const padded = step(model, adapters, batches, [undefined, undefined, undefined]);
  assertSame(t, 'fused, all packed', padded, step(model, adapters, batches, [64, 64, 64]));
  assertSame(t, 'fused, lora and mixdora packed', padded, step(model, adapters, batches, [64, undefined, 64]));
  assertSame(t, 'fused, all packed, recompute', padded, step(model, adapters, batches, [64, 64, 64], true));
  // A micro-batch of one example (one row either way) and one of two that fit a row of 64.
  const small = [examples([20], 512), examples([30, 33], 512, 7), examples([64], 512, 3)];
  assertSame(
    t,
    'fused, 1 and 2 examples',
    step(model, adapters, small, []),
    step(model, adapters, small, [64, 64, 64]),
  );
  for (const a of adapters) a.dispose();
  model.dispose();
});

test('sliding windows (Mistral) and soft-capped eager attention: packed equals padded', (t) => {
  const { model: mistral, ids, logits } = openReferenceModel('mistral-gqa-window');
  ids.dispose();
  logits.dispose();
  // The same weights with Gemma 2's attention soft-capping: the eager attention path, masked the same way.
  const capped = new CausalLM(
    { ...mistral.config, attnLogitSoftcap: 5 },
    mistral.weights,
    mistral.dtype,
    mistral.device,
  );
  assert.equal(mistral.config.slidingWindow, 4);
  const batch = examples([32, 20, 12, 6, 5, 4, 3, 9], mistral.config.vocabSize);
  for (const [name, model] of [
    ['Mistral, window 4', mistral],
    ['window 4, soft-capped', capped],
  ] as const) {
    for (const [kind, cfg] of [
      ['LoRA', LORA_ADAPTER],
      ['MixLoRA', mixloraAdapter({ router_aux_loss_coef: 0.01 })],
    ] as const) {
      const a = randomAdapter('a', cfg, model, { seed: 5, std: 0.05 }).requiresGrad_();
      assertSame(t, `${name}, ${kind}`, step(model, [a], [batch], [undefined]), step(model, [a], [batch], [32]));
      a.dispose();
    }
  }
  mistral.dispose();
});

/** A MixLoRA adapter packed (accumulating 2 micro-batches of 4 a step) fused with a DoRA adapter padded, on real
 * commonsense lengths; SGD (whose steps stay proportional to the gradients: see equivalence.test.ts). */
function packedRun(data: string, packing: boolean, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    cutoff_len: 256,
    group_by_length: false,
    ...extra,
    adapters: [
      {
        name: 'mix',
        adapter: mixloraAdapter({ router_aux_loss_coef: 0.01 }),
        data,
        prompt_template: 'none',
        optimizer: 'sgd',
        lr: 0.05,
        batch_size: 8,
        micro_batch_size: 4,
        num_epochs: 1,
        ...(packing ? { packing: true } : {}),
      },
      {
        name: 'dora',
        adapter: DORA_ADAPTER,
        data,
        prompt_template: 'none',
        optimizer: 'sgd',
        lr: 0.05,
        batch_size: 4,
        max_steps: 3,
      },
    ],
  };
}

test('training with packing: true ends where padded training ends (fused, accumulation); a resumed packed run is exact', async () => {
  const data = commonsenseSlice('boolq.train', 24);
  const padded = trainConfig(packedRun(data, false));
  const packed = trainConfig(packedRun(data, true));
  assert.equal(packed.adapters[0]!.packing, true);
  assert.ok(!('packing' in padded.adapters[0]!), 'absent when false: older configs keep their digest');
  await train(padded);
  await train(packed);
  for (const name of ['mix', 'dora']) {
    const d = maxDiff(
      adapterTensors(path.join(padded.outputDir, name)),
      adapterTensors(path.join(packed.outputDir, name)),
    );
    assert.ok(d <= 1e-6, `${name}: packed and padded training differ by ${d}`);
  }
  const [a, b] = [readMetrics(padded.outputDir), readMetrics(packed.outputDir)];
  assert.equal(b.length, a.length);
  b.forEach((m, i) => {
    assert.equal(m.tokens, a[i]!.tokens);
    assert.ok(Math.abs(m.loss - a[i]!.loss) <= 1e-5 && Math.abs((m.aux ?? 0) - (a[i]!.aux ?? 0)) <= 1e-5);
  });

  // Cut after the first checkpoint, resumed: the same adapters, bit for bit.
  const cut = trainConfig(packedRun(data, true, { save_steps: 1 }));
  await train(cut);
  const ckpts = path.join(cut.outputDir, 'checkpoints');
  const names = fs.readdirSync(ckpts).sort((x, y) => Number(x.split('-')[1]) - Number(y.split('-')[1]));
  for (const n of names.slice(1)) fs.rmSync(path.join(ckpts, n), { recursive: true });
  for (const n of ['mix', 'dora']) fs.rmSync(path.join(cut.outputDir, n), { recursive: true });
  await train(cut, { resume: true });
  for (const name of ['mix', 'dora'])
    assert.equal(
      maxDiff(adapterTensors(path.join(cut.outputDir, name)), adapterTensors(path.join(packed.outputDir, name))),
      0,
      `${name}: resumed packed run differs`,
    );
});
