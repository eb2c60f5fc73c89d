// Rows of different adapters run stacked (adapter-stack.ts, stacked-forward.ts: what `mixlora serve`'s
// decode steps do) equal the same rows run range by range, with the per-expert MixLoRA path as the
// reference: LoRA, DoRA (scales precomputed or not), MixLoRA top-k / top-p / switch, MixDoRA, adapters on
// some projections only, base-model rows, padding, and biases on the projections (DoRA's bias handling).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { assertClose } from '../helpers/assert.js';
import { ALL_PROJECTIONS, SMALL_MOE, SMALL_MOE_ROUTINGS } from '../helpers/test-adapters.js';
import * as T from '../../src/tensor/index.js';
import { llamaConfig, randomModel } from '../../src/models/random.js';
import { Adapter } from '../../src/adapters/adapter.js';
import { AdapterBatch, type RowRange } from '../../src/adapters/batch.js';
import { AdapterStackCache } from '../../src/adapters/adapter-stack.js';
import { parseAdapterConfig } from '../../src/adapters/config.js';
import type { CausalLM } from '../../src/models/causal-lm.js';

const lora = { peft_type: 'LORA', lora_dropout: 0, r: 3, lora_alpha: 6 };
const ADAPTERS: Record<string, Record<string, unknown> & { frozen?: boolean }> = {
  lora: { ...lora, target_modules: ALL_PROJECTIONS },
  'dora, frozen': { ...lora, target_modules: ALL_PROJECTIONS, use_dora: true, frozen: true },
  'dora attention only': { ...lora, r: 4, target_modules: ['q_proj', 'v_proj'], use_dora: true },
  mixlora: { ...SMALL_MOE, target_modules: ALL_PROJECTIONS, routing_strategy: 'mixlora', top_k: 2 },
  'mixdora, frozen': {
    ...SMALL_MOE,
    target_modules: ['o_proj', 'gate_proj', 'up_proj', 'down_proj'],
    routing_strategy: 'mixlora',
    top_k: 3,
    use_dora: true,
    frozen: true,
  },
  ...SMALL_MOE_ROUTINGS,
};

function makeAdapters(model: CausalLM): Adapter[] {
  return Object.entries(ADAPTERS).map(([name, { frozen, ...cfg }], i) => {
    T.manualSeed(20 + i);
    const a = Adapter.create(name, parseAdapterConfig(cfg, name), model);
    T.noGrad(() => {
      for (const p of a.parameters()) p.tensor.normal_(0, 0.3);
    });
    return frozen ? a.freezeForInference(model) : a;
  });
}

/** Rows: one base row first, then each adapter's rows (1 or 2), in ranges. */
function rangesOf(adapters: Adapter[]): RowRange[] {
  const ranges: RowRange[] = [{ start: 0, count: 1, adapter: null }];
  adapters.forEach((adapter, i) =>
    ranges.push({ start: ranges.reduce((n, r) => n + r.count, 0), count: 1 + (i % 2), adapter }),
  );
  return ranges;
}

for (const bias of [false, true]) {
  test(`stacked adapters equal range-by-range rows${bias ? ', projections with biases' : ''}`, () =>
    T.tidy(() => {
      const config = { ...llamaConfig({ vocab: 61, hidden: 16, intermediate: 24, layers: 2, heads: 2 }) };
      if (bias) Object.assign(config, { qkvBias: true, oBias: true, mlpBias: true });
      const model = randomModel(config, { seed: 3 });
      const adapters = makeAdapters(model);
      const ranges = rangesOf(adapters);
      const rows = ranges.reduce((n, r) => n + r.count, 0);
      T.manualSeed(9);
      const ids = T.randint(0, 61, [rows, 3]); // [B, T]: 3 tokens a row (≤ the stacked path's limit)
      const mask = T.tensor(Array.from({ length: rows }, (_, i) => [i % 2, 1, 1])); // [B, T] left padding on odd rows
      const stacks = new AdapterStackCache();
      const run = (opts: { stacks?: AdapterStackCache; efficient?: boolean }, attentionMask: T.Tensor | null) =>
        T.noGrad(() => {
          const hooks = new AdapterBatch(ranges, { training: false, record: 'none', ...opts });
          const out = model.forward(ids, { hooks, attentionMask: attentionMask ?? undefined }); // [B, T, V]
          hooks.dispose();
          return out;
        });
      for (const attentionMask of [null, mask]) {
        const what = attentionMask ? 'with padding' : 'no padding';
        const stacked = run({ stacks }, attentionMask);
        assert.equal(stacks.size, 1, 'the stacked path ran');
        assertClose(stacked, run({ efficient: false }, attentionMask), { atol: 2e-5, what: `${what}, per expert` });
        assertClose(stacked, run({}, attentionMask), { atol: 2e-5, what: `${what}, per range` });
      }
      const live = T.liveTensors();
      stacks.clear();
      assert.ok(T.liveTensors() < live, 'clearing the cache frees the stacked copies');
      for (const a of adapters) a.dispose();
      model.dispose();
    }));
}

test('the stack cache grows over the adapters its steps mix, drops unloaded ones, and frees all when cleared', () =>
  T.tidy(() => {
    const model = randomModel(llamaConfig({ vocab: 61, hidden: 16, intermediate: 24, layers: 1, heads: 2 }), {
      seed: 3,
    });
    const adapters = makeAdapters(model);
    const stacks = new AdapterStackCache(3);
    const before = T.liveTensors();
    const lin = model.weights.layers[0]!.proj.q_proj!;
    const first = stacks.get(adapters.slice(0, 2));
    first.projection(0, 'q_proj', lin); // built on first use
    assert.equal(stacks.get([adapters[1]!, adapters[0]!]), first, 'the order of the rows does not matter');
    assert.equal(stacks.get([adapters[1]!]), first, 'a subset reuses the stack');
    const grown = stacks.get(adapters.slice(1, 3));
    assert.deepEqual(new Set(grown.adapters), new Set(adapters.slice(0, 3)), 'a new adapter grows the set');
    const unloaded = adapters[0]!.parameters().length; // a LoRA adapter: its parameters are all its tensors
    adapters[0]!.dispose();
    const next = stacks.get([adapters[1]!, adapters[3]!]);
    assert.ok(!next.adapters.includes(adapters[0]!), 'an unloaded adapter is dropped');
    assert.equal(stacks.get(adapters.slice(1, 6)).adapters.length, 5, "past the limit: the step's own set");
    stacks.get(adapters.slice(1, 6)).projection(0, 'q_proj', lin);
    stacks.clear();
    assert.equal(stacks.size, 0);
    assert.equal(T.liveTensors(), before - unloaded, 'no stacked copy left');
    for (const a of adapters.slice(1)) a.dispose();
    model.dispose();
  }));
