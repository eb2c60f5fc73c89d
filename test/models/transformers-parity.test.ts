// The LLaMA-family forward against Hugging Face transformers itself (AutoModelForCausalLM, float32, eager
// attention; test/reference/hf_libraries.py) on the tiny model folders of test/reference/models.py:
// logits, the per-token NLL and transformers' causal-LM loss, and a right-padded batch with an attention
// mask (logits at the real tokens, and mixlora's perplexity per example). Tolerance: 1e-4 absolute on every
// value, float32 on both sides.
import { test } from 'node:test';
import { assertClose, maxAbsDiff } from '../helpers/assert.js';
import { referenceDir } from '../helpers/fixtures.js';
import { nextTokenCE, openModel } from '../helpers/reference-adapters.js';
import { transformersCaseNames, transformersExpected } from '../helpers/reference-libraries.js';
import * as T from '../../src/tensor/index.js';
import { perplexity } from '../../src/eval/perplexity.js';

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
