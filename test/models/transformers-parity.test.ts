// The LLaMA-family forward against Hugging Face transformers itself (AutoModelForCausalLM, float32, eager
// attention; test/reference/hf_libraries.py) on the tiny model folders of test/reference/models.py:
// logits, the per-token NLL and transformers' causal-LM loss, and a right-padded batch with an attention
// mask (logits at the real tokens, and mixlora's perplexity per example). Tolerance: 1e-4 absolute on every
// value, float32 on both sides. Greedy generation of a batch (mixlora: the serving engine's paged KV cache;
// transformers: its KV cache and left-padded prompts), with and without a repetition penalty, gives exactly
// transformers' generate() tokens; the fixture script refuses prompts
// whose greedy choice has a top-2 margin under 1e-3, so equality does not hang on rounding. The folders
// re-saved by transformers' save_pretrained (its config.json layout, e.g. rope_parameters) load the same.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { assertClose, maxAbsDiff } from '../helpers/assert.js';
import { referenceDir } from '../helpers/fixtures.js';
import { nextTokenCE, openModel } from '../helpers/reference-adapters.js';
import { transformersCaseNames, transformersExpected } from '../helpers/reference-libraries.js';
import * as T from '../../src/tensor/index.js';
import { perplexity } from '../../src/eval/perplexity.js';
import { generate } from '../../src/generate/generate.js';

const ATOL = 1e-4;

for (const name of transformersCaseNames()) {
  test(`${name}: logits, per-token NLL and loss equal transformers' (max abs diff ≤ ${ATOL}, float32)`, () => {
    const model = openModel(referenceDir('models', name));
    T.tidy(() =>
      T.noGrad(() => {
        const e = transformersExpected(name);
        const ids = e.get('input_ids')!; // [B, T]
        const logits = model.forward(ids); // [B, T, V]
        assertClose(logits, e.get('logits')!, { atol: ATOL, what: `${name} logits` });
        const [B, Tn, V] = logits.shape as [number, number, number];
        const nll = T.crossEntropy(logits.narrow(1, 0, Tn - 1).reshape(-1, V), ids.narrow(1, 1, Tn - 1).reshape(-1), {
          reduction: 'none',
        }).reshape(B, Tn - 1); // [B, T-1]
        assertClose(nll, e.get('nll')!, { atol: ATOL, what: `${name} per-token NLL` });
        const loss = nextTokenCE(logits, e.get('labels')!);
        assertClose([loss.item()], e.get('loss')!, { atol: ATOL, what: `${name} loss (labels with -100)` });
        console.log(`# ${name}: logits max abs diff ${maxAbsDiff(logits, e.get('logits')!).toExponential(2)}`);
      }),
    );
  });

  test(`${name}: a right-padded batch with an attention mask equals transformers' (≤ ${ATOL})`, () => {
    const model = openModel(referenceDir('models', name));
    T.tidy(() => {
      const e = transformersExpected(name);
      const ids = e.get('padded_input_ids')!; // [B, T]
      const mask = e.get('padded_attention_mask')!; // [B, T], 1 = token
      const logits = T.noGrad(() => model.forward(ids, { attentionMask: mask })); // [B, T, V]
      // Only the real tokens' logits are defined the same way by both (padding rows differ by design).
      const real = mask.to('float32').unsqueeze(-1); // [B, T, 1]
      assertClose(logits.mul(real), e.get('padded_logits')!.mul(real), { atol: ATOL, what: `${name} padded logits` });
      // mixlora's perplexity batches these examples with the same right padding.
      const rows = ids.toNumbers();
      const lengths = mask.sum(1).toNumbers();
      const Tn = ids.size(1);
      const examples = lengths.map((n, i) => {
        const inputIds = rows.slice(i * Tn, i * Tn + n);
        return { inputIds, labels: inputIds };
      });
      const ours = perplexity(model, examples, { batchSize: examples.length });
      const sums = e.get('padded_nll')!.sum(1).toNumbers(); // summed NLL of each row's real tokens
      assertClose(
        ours.examples.map((x) => x.nll!),
        sums.map((s, i) => s / (lengths[i]! - 1)),
        { atol: ATOL, what: `${name} mean NLL per padded example` },
      );
    });
    model.dispose();
  });
}

for (const name of transformersCaseNames()) {
  test(`${name}: greedy generation of a batch of prompts equals transformers' generate() (left-padded there)`, () => {
    const model = openModel(referenceDir('models', name));
    T.tidy(() => {
      const e = transformersExpected(name);
      const L = e.get('gen_prompts')!.size(1);
      const ids = e.get('gen_prompts')!.toNumbers();
      const mask = e.get('gen_prompt_mask')!.toNumbers();
      const prompts = Array.from({ length: e.get('gen_prompts')!.size(0) }, (_, b) =>
        ids.slice(b * L, (b + 1) * L).filter((_, t) => mask[b * L + t] === 1),
      );
      const rows = (t: T.Tensor) => {
        const n = t.size(1);
        const flat = t.toNumbers();
        return prompts.map((_, b) => flat.slice(b * n, (b + 1) * n));
      };
      const opts = { temperature: 0, topK: null, topP: null, stopIds: [], maxNewTokens: e.get('gen_greedy')!.size(1) };
      assert.deepEqual(generate(model, prompts, { ...opts, repetitionPenalty: null }), rows(e.get('gen_greedy')!));
      // transformers penalises the left padding too when batching; its per-prompt runs are the reference.
      assert.deepEqual(
        generate(model, prompts, { ...opts, repetitionPenalty: 1.3 }),
        rows(e.get('gen_greedy_penalty')!),
        'with repetition_penalty 1.3',
      );
    });
    model.dispose();
  });
}

for (const name of transformersCaseNames()) {
  test(`${name}: the folder as transformers saves it gives transformers' logits (≤ ${ATOL})`, () => {
    const model = openModel(referenceDir('transformers', 'saved', name));
    T.tidy(() =>
      T.noGrad(() => {
        const e = transformersExpected(name);
        assertClose(model.forward(e.get('input_ids')!), e.get('logits')!, { atol: ATOL, what: `${name} logits` });
      }),
    );
    model.dispose();
  });
}
