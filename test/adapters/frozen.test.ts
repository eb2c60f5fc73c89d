// Adapters frozen for inference (Adapter.freezeForInference): DoRA's precomputed scales give the
// outputs of the per-forward norms (exactly, where the computation is otherwise the same), are never
// used in training or under autograd, and go when the adapter is disposed or made trainable again.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { assertClose } from '../helpers/assert.js';
import { referenceDir } from '../helpers/fixtures.js';
import { openModel } from '../helpers/reference-adapters.js';
import * as T from '../../src/tensor/index.js';
import { Adapter } from '../../src/adapters/adapter.js';
import { AdapterBatch } from '../../src/adapters/batch.js';
import { parseAdapterConfig } from '../../src/adapters/config.js';
import type { CausalLM } from '../../src/models/causal-lm.js';

const ALL = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'];
const configs = {
  dora: { peft_type: 'LORA', r: 4, lora_alpha: 8, lora_dropout: 0, target_modules: ALL, use_dora: true },
  mixdora: {
    peft_type: 'MIXLORA',
    r: 2,
    lora_alpha: 4,
    lora_dropout: 0,
    target_modules: ALL,
    routing_strategy: 'mixlora',
    num_experts: 3,
    top_k: 2,
    use_dora: true,
  },
} as const;

function randomAdapter(model: CausalLM, kind: keyof typeof configs, seed: number): Adapter {
  T.manualSeed(seed);
  const a = Adapter.create(kind, parseAdapterConfig(configs[kind], kind), model);
  T.noGrad(() => {
    for (const p of a.parameters()) if (!p.name.includes('moe_gate')) p.tensor.normal_(0, 0.3);
  });
  return a;
}

/** Logits [B, T, V] of the adapter on ids, in inference or training mode. */
function logits(model: CausalLM, a: Adapter, ids: T.Tensor, training: boolean): T.Tensor {
  const hooks = AdapterBatch.all(a, { training, record: 'none' });
  try {
    return training ? model.forward(ids, { hooks }) : T.noGrad(() => model.forward(ids, { hooks }));
  } finally {
    hooks.dispose();
  }
}

/** The frozen scales of every DoRA module. */
function scales(a: Adapter): T.Tensor[] {
  return a.layers.flatMap((l) =>
    [...Object.values(l.lora), ...Object.values(l.moe?.experts ?? {})].flatMap((m) =>
      m?.frozenScale ? [m.frozenScale] : [],
    ),
  );
}

for (const kind of ['dora', 'mixdora'] as const) {
  test(`${kind}: frozen scales give exactly the logits of per-forward norms, never in training; they go with the adapter`, () =>
    T.tidy(() => {
      const model = openModel(referenceDir('adapters', 'mixlora', 'model'));
      T.manualSeed(3);
      const ids = T.randint(0, 53, [3, 7]); // [B, T]
      const a = randomAdapter(model, kind, 11);
      const thawed = logits(model, a, ids, false);
      const thawedTraining = logits(model, a, ids, true);
      a.freezeForInference(model);
      const frozen = scales(a);
      assert.ok(frozen.length > 0, 'every DoRA module has its scale');
      if (kind === 'dora')
        assert.equal(logits(model, a, ids, false).sub(thawed).abs().amax().item(), 0, 'bit-identical');
      // Frozen MixDoRA: the experts' stored scales, equal up to rounding.
      else assertClose(logits(model, a, ids, false), thawed, { atol: 1e-5, what: 'MixDoRA' });

      // Spoil the stored scales: inference sees it, training (and autograd) must not.
      T.noGrad(() => frozen.forEach((s) => s.mul_(2)));
      assert.ok(logits(model, a, ids, false).sub(thawed).abs().amax().item() > 0, 'inference reads the scales');
      assert.equal(logits(model, a, ids, true).sub(thawedTraining).abs().amax().item(), 0, 'training ignores them');
      const underGrad = ((): T.Tensor => {
        // grad mode is on here (outside noGrad)
        const hooks = AdapterBatch.all(a, { training: false, record: 'none' });
        const out = model.forward(ids, { hooks });
        hooks.dispose();
        return out;
      })();
      assert.equal(underGrad.sub(thawed).abs().amax().item(), 0, 'autograd ignores them');

      // Trainable again: the scales are dropped (and freed), the forwards compute the norms again.
      a.requiresGrad_();
      assert.equal(scales(a).length, 0);
      assert.ok(frozen.every((s) => s.isDisposed));
      assert.equal(
        T.noGrad(() => logits(model, a, ids, false))
          .sub(thawed)
          .abs()
          .amax()
          .item(),
        0,
      );
      const again = scales(a.freezeForInference(model));
      a.dispose();
      assert.ok(again.length > 0 && again.every((s) => s.isDisposed), 'disposing frees them');
      model.dispose();
    }));
}
