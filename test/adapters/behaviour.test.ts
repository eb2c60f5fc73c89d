// Adapter behaviour beyond parity: identity at init, efficient = per-expert path, mixed batches equal
// separate runs (outputs and gradients), exact save/load, .bin = .safetensors, legacy conversion, merging.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { assertClose } from '../helpers/assert.js';
import { referenceDir, tempDir } from '../helpers/fixtures.js';
import { adaptedLoss, nextTokenCE, openAdapterCase, openModel } from '../helpers/reference-adapters.js';
import { ALL_TARGETS, DORA_ADAPTER, mixloraAdapter } from '../helpers/train.js';
import * as T from '../../src/tensor/index.js';
import { Adapter } from '../../src/adapters/adapter.js';
import { AdapterBatch } from '../../src/adapters/batch.js';
import { auxLoss } from '../../src/adapters/aux-loss.js';
import { parseAdapterConfig } from '../../src/adapters/config.js';
import { loadAdapter, saveAdapter } from '../../src/adapters/io.js';
import { adapterStateDict } from '../../src/adapters/state-dict.js';
import { mergeIntoWeights } from '../../src/adapters/merge.js';
import { readTorchCheckpoint } from '../../src/io/torch-zip.js';
import { loadAll } from '../../src/io/safetensors.js';
import { structureWeights } from '../../src/models/weights.js';
import { llamaConfig, randomModel } from '../../src/models/random.js';
import { CausalLM } from '../../src/models/causal-lm.js';
import { convertLegacyAdapter } from '../../src/adapters/convert-legacy.js';

const ALL = ALL_TARGETS;
const configs = {
  lora: { peft_type: 'LORA', r: 4, lora_alpha: 8, lora_dropout: 0, target_modules: ALL },
  dora: DORA_ADAPTER,
  mixlora: mixloraAdapter({ router_aux_loss_coef: 0.01 }),
  mixdora: {
    peft_type: 'MIXLORA',
    r: 2,
    lora_alpha: 4,
    lora_dropout: 0,
    target_modules: ['q_proj', 'gate_proj', 'up_proj', 'down_proj'],
    routing_strategy: 'mixlora',
    num_experts: 3,
    top_k: 2,
    use_dora: true,
  },
  dynamic: {
    peft_type: 'MIXLORA',
    r: 2,
    lora_alpha: 4,
    lora_dropout: 0,
    target_modules: ['gate_proj', 'down_proj'],
    routing_strategy: 'mixlora-dynamic',
    num_experts: 4,
    top_p: 0.6,
  },
  switch: {
    peft_type: 'MIXLORA',
    r: 2,
    lora_alpha: 4,
    lora_dropout: 0,
    target_modules: ['up_proj', 'down_proj'],
    routing_strategy: 'mixlora-switch',
    num_experts: 4,
    expert_capacity: 3,
    jitter_noise: 0,
  },
} as const;

const MODEL_DIR = () => referenceDir('adapters', 'mixlora', 'model');

function fresh(model: CausalLM, kind: keyof typeof configs, seed: number, randomB = true): Adapter {
  T.manualSeed(seed);
  const a = Adapter.create(kind, parseAdapterConfig(configs[kind], kind), model);
  if (randomB)
    T.noGrad(() => {
      for (const p of a.parameters()) if (p.name.includes('lora_B')) p.tensor.normal_(0, 0.3);
    });
  return a;
}

function ids(seed: number, rows: number, len = 9): T.Tensor {
  T.manualSeed(seed);
  return T.randint(0, 53, [rows, len]);
}

test('a fresh adapter (B = 0) leaves the logits unchanged (top-k MixLoRA up to float rounding)', () =>
  T.tidy(() => {
    const model = openModel(MODEL_DIR());
    const x = ids(1, 2);
    const base = T.noGrad(() => model.forward(x));
    for (const kind of ['lora', 'dora', 'mixlora', 'mixdora'] as const) {
      const a = fresh(model, kind, 2, false);
      const out = T.noGrad(() => model.forward(x, { hooks: AdapterBatch.all(a, { training: false }) }));
      if (kind === 'lora' || kind === 'dora')
        assert.equal(
          T.noGrad(() => out.sub(base).abs().amax().item()),
          0,
          `${kind}: not identical`,
        );
      else assertClose(out, base, { atol: 1e-5, what: kind });
      a.dispose();
    }
    model.dispose();
  }));

test('the efficient expert path equals the per-expert path (outputs and gradients)', () =>
  T.tidy(() => {
    const model = openModel(MODEL_DIR());
    const x = ids(3, 2);
    const labels = x;
    for (const kind of ['mixlora', 'mixdora', 'dynamic', 'switch'] as const) {
      const a = fresh(model, kind, 4).requiresGrad_();
      const run = (efficient: boolean) => {
        const { logits, ce, aux } = adaptedLoss(model, a, x, labels, efficient);
        (aux ? ce.add(aux) : ce).backward();
        const grads = a.parameters().map((p) => p.tensor.grad!.clone());
        T.zeroGrad(a.parameters().map((p) => p.tensor));
        return { logits, grads };
      };
      const eff = run(true);
      const plain = run(false);
      assertClose(eff.logits, plain.logits, { atol: 1e-5, what: `${kind} logits` });
      eff.grads.forEach((g, i) =>
        assertClose(g, plain.grads[i]!, { atol: 1e-5, what: `${kind} gradient ${a.parameters()[i]!.name}` }),
      );
      a.dispose();
    }
    model.dispose();
  }));

test('a batch mixing rows of several adapters (and rows with none) equals running each alone, gradients included', () =>
  T.tidy(() => {
    const model = openModel(MODEL_DIR());
    const kinds = ['lora', 'mixlora', null, 'dora', 'switch', 'mixdora'] as const;
    const adapters = kinds.map((k, i) => (k ? fresh(model, k, 10 + i).requiresGrad_() : null));
    const rowsOf = [2, 1, 1, 2, 2, 1];
    const inputs = rowsOf.map((r, i) => ids(20 + i, r));
    // Alone: loss, logits and gradients of each adapter.
    const alone = adapters.map((a, i) => {
      const batch = AdapterBatch.all(a, { training: true });
      const logits = model.forward(inputs[i]!, { hooks: batch });
      let loss = nextTokenCE(logits, inputs[i]!);
      const aux = a?.config.moe ? auxLoss(batch.routing.get(a) ?? [], a.config.moe) : null;
      if (aux) loss = loss.add(aux);
      if (a) loss.backward();
      batch.dispose();
      const grads = a ? a.parameters().map((p) => p.tensor.grad!.clone()) : [];
      if (a) T.zeroGrad(a.parameters().map((p) => p.tensor));
      return { logits, grads };
    });
    // Together: one forward over all rows, the sum of each adapter's loss.
    let start = 0;
    const ranges = adapters.map((adapter, i) => {
      const r = { start, count: rowsOf[i]!, adapter };
      start += rowsOf[i]!;
      return r;
    });
    const batch = new AdapterBatch(ranges, { training: true });
    const logits = model.forward(T.cat(inputs, 0), { hooks: batch });
    let total: T.Tensor | null = null;
    ranges.forEach((r, i) => {
      const part = logits.narrow(0, r.start, r.count);
      assertClose(part, alone[i]!.logits, { atol: 1e-5, what: `rows of ${kinds[i] ?? 'no adapter'}` });
      if (!r.adapter) return;
      let loss = nextTokenCE(part, inputs[i]!);
      const aux = r.adapter.config.moe ? auxLoss(batch.routing.get(r.adapter) ?? [], r.adapter.config.moe) : null;
      if (aux) loss = loss.add(aux);
      total = total ? total.add(loss) : loss;
    });
    total!.backward();
    batch.dispose();
    adapters.forEach((a, i) => {
      if (!a) return;
      a.parameters().forEach((p, j) =>
        assertClose(p.tensor.grad!, alone[i]!.grads[j]!, { atol: 1e-5, what: `${kinds[i]} gradient ${p.name}` }),
      );
      a.dispose();
    });
    model.dispose();
  }));

test('save -> load is exact for every kind', async () => {
  const model = openModel(MODEL_DIR());
  for (const kind of Object.keys(configs) as (keyof typeof configs)[]) {
    const a = fresh(model, kind, 30);
    const dir = path.join(tempDir(), kind);
    saveAdapter(dir, a);
    const b = await loadAdapter(dir, model);
    assert.deepEqual(b.config, a.config, `${kind} config`);
    const sa = adapterStateDict(a);
    const sb = adapterStateDict(b);
    assert.deepEqual([...sb.keys()], [...sa.keys()]);
    T.tidy(() => {
      for (const [k, t] of sa)
        assert.equal(
          T.noGrad(() => t.sub(sb.get(k)!).abs().amax().item()),
          0,
          `${kind}: ${k}`,
        );
    });
    a.dispose();
    b.dispose();
  }
  model.dispose();
});

test('the reference .bin and .safetensors of one adapter hold the same weights; the legacy layout loads and converts to the same adapter', async () => {
  const dir = referenceDir('adapters', 'mixlora');
  const st = loadAll(path.join(dir, 'adapter', 'adapter_model.safetensors')).tensors;
  const bin = await readTorchCheckpoint(path.join(dir, 'adapter', 'adapter_model.bin'));
  assert.deepEqual([...bin.keys()].sort(), [...st.keys()].sort());
  for (const [k, t] of st)
    assert.deepEqual(Array.from(bin.get(k)!.toFloat32Array()), Array.from(t.toFloat32Array()), k);
  const { model, adapter, expected } = await openAdapterCase('mixlora');
  const legacy = await loadAdapter(referenceDir('adapters', 'mixlora-legacy'), model);
  const out = path.join(tempDir(), 'converted');
  await convertLegacyAdapter(referenceDir('adapters', 'mixlora-legacy'), out);
  const converted = await loadAdapter(out, model);
  T.tidy(() => {
    const x = expected.get('input_ids')!;
    const want = expected.get('logits')!;
    for (const a of [adapter, legacy, converted]) {
      assertClose(
        T.noGrad(() => model.forward(x, { hooks: AdapterBatch.all(a, { training: false }) })),
        want,
        // 3e-5: the reference's logits come from PyTorch's BLAS, ours from oneDNN (native/kernels/linear.cc), whose
        // float32 sums run in another order (1e-5 when both use the BLAS: MIXLORA_GEMM=aten).
        { atol: 3e-5, what: a.name },
      );
    }
  });
  for (const a of [adapter, legacy, converted]) a.dispose();
  model.dispose();
});

test('merging LoRA and DoRA gives the logits of the unmerged adapter; MixLoRA cannot be merged', async () => {
  for (const name of ['lora', 'dora-rslora', 'dora-qwen2-bias-no-magnitude']) {
    const { model, adapter, expected } = await openAdapterCase(name);
    const { tensors, merged } = mergeIntoWeights(model, adapter);
    const mergedModel = new CausalLM(
      model.config,
      structureWeights(model.config, (n) => tensors.get(n)!),
      'float32',
      'cpu',
    );
    // Float32: W'x and m/‖·‖ ⊙ (Wx + s·BAx) associate differently; over two layers of large random
    // activations that moves logits by up to ~2e-5.
    T.tidy(() =>
      assertClose(
        T.noGrad(() => mergedModel.forward(expected.get('input_ids')!)),
        expected.get('logits')!,
        { atol: 5e-5, what: name },
      ),
    );
    merged.forEach((t) => t.dispose());
    adapter.dispose();
    model.dispose();
  }
  const { model, adapter } = await openAdapterCase('mixlora');
  assert.throws(() => mergeIntoWeights(model, adapter), /cannot be merged/);
  adapter.dispose();
  model.dispose();
});

test('a hostile pickle is refused without being executed', async () => {
  const marker = '/tmp/mixlora-pickle-executed';
  fs.rmSync(marker, { force: true });
  const model = openModel(MODEL_DIR());
  await assert.rejects(
    loadAdapter(referenceDir('adapters', 'hostile'), model),
    /refusing to load: the pickle references posix\.system/,
  );
  assert.equal(fs.existsSync(marker), false, 'the pickle ran code');
  model.dispose();
});

test('bad configs and files are refused naming the field or tensor', async () => {
  const bad: [Record<string, unknown>, RegExp][] = [
    [{ ...configs.mixlora, num_experts: 0 }, /'num_experts' must be >= 1/],
    [{ ...configs.mixlora, top_k: 5 }, /'top_k' \(5\) is larger than num_experts \(4\)/],
    [{ ...configs.mixlora, routing_strategy: 'hash' }, /'routing_strategy' 'hash' is unknown/],
    [{ ...configs.lora, target_modules: ['q_proj', 'lm_head'] }, /'target_modules' names 'lm_head'/],
    [{ ...configs.lora, r: 0 }, /'r' must be >= 1/],
    [{ ...configs.lora, lora_dropout: 1.5 }, /'lora_dropout' must be <= 0.999/],
    [{ ...configs.lora, peft_type: 'IA3' }, /'peft_type' must be one of LORA, MIXLORA/],
    [{ ...configs.lora, rank_pattern: { q_proj: 8 } }, /'rank_pattern' .* is not supported/],
    [{ ...configs.lora, lora_bias: true }, /'lora_bias' true is not supported/],
    [{ ...configs.lora, alora_invocation_tokens: [5, 6] }, /'alora_invocation_tokens' \[5,6\] is not supported/],
    [{ ...configs.lora, trainable_token_indices: [1] }, /'trainable_token_indices' \[1\] is not supported/],
    [{ ...configs.mixlora, target_modules: ['q_proj'] }, /must include at least one of gate_proj/],
    [{ ...configs.mixlora, act_fn: 'gelu' }, /'act_fn' 'gelu' is not supported/],
  ];
  for (const [cfg, re] of bad) assert.throws(() => parseAdapterConfig(cfg, 'adapter_config.json'), re, re.source);
  const model = openModel(MODEL_DIR());
  const a = fresh(model, 'lora', 40);
  const dir = path.join(tempDir(), 'a');
  saveAdapter(dir, a);
  // Wrong shape for the base model: a model with a wider FFN.
  const wide = randomModel(llamaConfig({ vocab: 53, hidden: 24, intermediate: 48, layers: 2, heads: 4, kvHeads: 2 }), {
    seed: 1,
  });
  await assert.rejects(
    loadAdapter(dir, wide),
    /tensor 'base_model\.model\.model\.layers\.0\.mlp\.gate_proj\.lora_B\.weight' has shape \[40, 4\] but the base model needs \[48, 4\]/,
  );
  fs.writeFileSync(
    path.join(dir, 'adapter_config.json'),
    JSON.stringify({ ...configs.lora, target_modules: ['q_proj'] }),
  );
  await assert.rejects(loadAdapter(dir, model), /unexpected tensor/);
  fs.writeFileSync(path.join(dir, 'adapter_config.json'), JSON.stringify({ ...configs.lora, r: 8 }));
  await assert.rejects(loadAdapter(dir, model), /has shape \[4, 24\] but the base model needs \[8, 24\]/);
  fs.writeFileSync(path.join(dir, 'adapter_config.json'), '{"peft_type": ');
  await assert.rejects(loadAdapter(dir, model), /adapter_config\.json: not valid JSON/);
  a.dispose();
  model.dispose();
  wide.dispose();
});
