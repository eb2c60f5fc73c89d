// Adapters on Gemma 2 and Phi-3 beyond parity: on the families' MixLoRA/MixDoRA reference cases the efficient
// expert path equals the per-expert path (logits and every gradient, ≤ 1e-5); a batch mixing rows of a
// LoRA, a MixLoRA and no adapter over Phi-3's fused projections equals each alone (≤ 1e-5, gradients too);
// targets a family lacks and an act_fn other than the model's are refused naming them.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { assertClose } from '../helpers/assert.js';
import { referenceDir } from '../helpers/fixtures.js';
import { adaptedLoss, nextTokenCE, openAdapterCase, openModel } from '../helpers/reference-adapters.js';
import * as T from '../../src/tensor/index.js';
import { Adapter } from '../../src/adapters/adapter.js';
import { AdapterBatch } from '../../src/adapters/batch.js';
import { auxLoss } from '../../src/adapters/aux-loss.js';
import { parseAdapterConfig } from '../../src/adapters/config.js';
import { loadAdapter } from '../../src/adapters/io.js';
import { UserError } from '../../src/util/errors.js';

for (const name of ['mixlora-gemma2', 'mixdora-phi3-fused', 'mixlora-gemma']) {
  test(`${name}: the efficient expert path equals the per-expert path (logits, gradients ≤ 1e-5)`, async () => {
    const { model, adapter, expected } = await openAdapterCase(name);
    adapter.requiresGrad_();
    T.tidy(() => {
      const ids = expected.get('input_ids')!;
      const run = (efficient: boolean) => {
        const { logits, ce, aux } = adaptedLoss(model, adapter, ids, expected.get('labels')!, efficient);
        (aux ? ce.add(aux) : ce).backward();
        const grads = adapter.parameters().map((p) => p.tensor.grad!.clone());
        T.zeroGrad(adapter.parameters().map((p) => p.tensor));
        return { logits, grads };
      };
      const eff = run(true);
      const plain = run(false);
      assertClose(eff.logits, plain.logits, { atol: 1e-5, what: 'logits' });
      eff.grads.forEach((g, i) =>
        assertClose(g, plain.grads[i]!, { atol: 1e-5, what: `gradient ${adapter.parameters()[i]!.name}` }),
      );
    });
    adapter.dispose();
    model.dispose();
    for (const t of expected.values()) t.dispose();
  });
}

test('phi3: rows of LoRA (fused projections), MixDoRA and no adapter in one batch equal each alone', async () => {
  const model = openModel(referenceDir('models', 'phi3-partial-rotary'));
  const lora = (
    await loadAdapter(referenceDir('peft', 'lora-rslora-phi3-some', 'adapter'), model, 'lora')
  ).requiresGrad_();
  const mix = (
    await loadAdapter(referenceDir('adapters', 'mixdora-phi3-fused', 'adapter'), model, 'mix')
  ).requiresGrad_();
  T.tidy(() => {
    const adapters = [lora, mix, null];
    const inputs = [2, 2, 1].map((rows, i) =>
      T.tensor(
        Array.from({ length: rows }, (_, r) => Array.from({ length: 9 }, (_, t) => (7 * t + 13 * r + 5 * i) % 61)),
        { dtype: 'int64' },
      ),
    );
    const lossOf = (a: Adapter | null, logits: T.Tensor, x: T.Tensor, batch: AdapterBatch) => {
      const ce = nextTokenCE(logits, x);
      const aux = a?.config.moe ? auxLoss(batch.routing.get(a) ?? [], a.config.moe) : null;
      return aux ? ce.add(aux) : ce;
    };
    const alone = adapters.map((a, i) => {
      const batch = AdapterBatch.all(a, { training: true });
      const logits = model.forward(inputs[i]!, { hooks: batch });
      if (a) lossOf(a, logits, inputs[i]!, batch).backward();
      batch.dispose();
      const grads = a ? a.parameters().map((p) => p.tensor.grad!.clone()) : [];
      if (a) T.zeroGrad(a.parameters().map((p) => p.tensor));
      return { logits, grads };
    });
    const ranges = [
      { start: 0, count: 2, adapter: lora },
      { start: 2, count: 2, adapter: mix },
      { start: 4, count: 1, adapter: null },
    ];
    const batch = new AdapterBatch(ranges, { training: true });
    const logits = model.forward(T.cat(inputs, 0), { hooks: batch }); // [5, T, V]
    let total: T.Tensor | null = null;
    ranges.forEach((r, i) => {
      const part = logits.narrow(0, r.start, r.count);
      assertClose(part, alone[i]!.logits, { atol: 1e-5, what: `rows of ${r.adapter?.name ?? 'no adapter'}` });
      if (!r.adapter) return;
      const loss = lossOf(r.adapter, part, inputs[i]!, batch);
      total = total ? total.add(loss) : loss;
    });
    total!.backward();
    batch.dispose();
    [lora, mix].forEach((a, i) =>
      a
        .parameters()
        .forEach((p, j) =>
          assertClose(p.tensor.grad!, alone[i]!.grads[j]!, { atol: 1e-5, what: `${a.name} gradient ${p.name}` }),
        ),
    );
  });
  lora.dispose();
  mix.dispose();
  model.dispose();
});

test('targets a family lacks and a foreign act_fn are refused naming them', () => {
  const phi3 = openModel(referenceDir('models', 'phi3-partial-rotary'));
  const gemma = openModel(referenceDir('models', 'gemma-mqa-headdim'));
  const llama = openModel(referenceDir('models', 'llama-mha-bias'));
  const cfg = (extra: Record<string, unknown>) =>
    parseAdapterConfig({ peft_type: 'LORA', r: 2, lora_alpha: 4, ...extra }, 'adapter_config.json');
  const mixlora = (extra: Record<string, unknown>) =>
    cfg({ peft_type: 'MIXLORA', routing_strategy: 'mixlora', num_experts: 2, target_modules: ['down_proj'], ...extra });
  const cases: [() => unknown, RegExp][] = [
    [
      () => Adapter.create('a', cfg({ target_modules: ['q_proj', 'o_proj'] }), phi3),
      /target_modules names q_proj, which this phi3 model does not have \(its projections: qkv_proj, o_proj, gate_up_proj, down_proj\)/,
    ],
    [() => Adapter.create('a', cfg({ target_modules: ['qkv_proj'] }), llama), /names qkv_proj, which this llama model/],
    [() => Adapter.create('a', mixlora({ target_modules: ['gate_proj'] }), phi3), /names gate_proj, which this phi3/],
    [() => Adapter.create('a', mixlora({ act_fn: 'silu' }), gemma), /act_fn 'silu' differs from this gemma model's/],
  ];
  for (const [f, re] of cases) assert.throws(f, (e: Error) => e instanceof UserError && re.test(e.message), re.source);
  const ok = Adapter.create('a', mixlora({ act_fn: 'gelu_pytorch_tanh' }), gemma);
  assert.equal(ok.config.moe!.actFn, 'gelu_pytorch_tanh');
  ok.dispose();
  for (const m of [phi3, gemma, llama]) m.dispose();
});
