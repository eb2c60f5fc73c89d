// The LLaMA-family forward against the independent PyTorch reference (test/reference/models.py):
// multi-head with biases, grouped-query with llama3 rope scaling and tied embeddings, Mistral with a
// sliding window, Qwen2 with q/k/v biases, bfloat16 weights with linear scaling.
import { test } from 'node:test';
import { maxAbsDiff } from '../helpers/assert.js';
import { openReferenceModel, referenceModelNames } from '../helpers/reference-models.js';
import * as T from '../../src/tensor/index.js';
import { PLACEMENT, TEST_DTYPE, assertParity, bound, host, relativeError } from '../helpers/device.js';

const cases = referenceModelNames();

for (const name of cases) {
  test(`logits equal the PyTorch reference: ${name} (${bound('logits', 'max abs diff ≤ 1e-4')}, ${TEST_DTYPE})${PLACEMENT}`, () =>
    T.tidy(() => {
      const { model, ids, logits } = openReferenceModel(name);
      const ours = host(T.noGrad(() => model.forward(ids)));
      assertParity('logits', ours, logits, 1e-4, name);
      console.log(
        `# ${name}: max abs diff ${maxAbsDiff(ours, logits).toExponential(2)}, relative error ${relativeError(ours.toNumbers(), logits.toNumbers()).toExponential(2)}`,
      );
      model.dispose();
      ids.dispose();
      logits.dispose();
    }));
}
