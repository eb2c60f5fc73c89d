// LoRA, DoRA, MixLoRA, MixDoRA, dynamic and switch routing against the independent PyTorch reference
// (test/reference/adapters.py), with nonzero B: logits (max abs diff ≤ 1e-4), CE and aux losses (≤ 1e-5), and
// the gradient of every adapter tensor (≤ 1e-4 relative to the tensor's largest reference value).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { assertClose, maxAbsDiff } from '../helpers/assert.js';
import { adaptedLoss, adapterCaseNames, openAdapterCase } from '../helpers/reference-adapters.js';
import * as T from '../../src/tensor/index.js';
import { adapterStateDict } from '../../src/adapters/io.js';

for (const name of adapterCaseNames()) {
  test(`adapter parity with PyTorch: ${name}`, async () => {
    const { model, adapter, expected } = await openAdapterCase(name);
    adapter.requiresGrad_();
    T.tidy(() => {
      const ids = expected.get('input_ids')!;
      const labels = expected.get('labels')!;
      const { logits, ce, aux } = adaptedLoss(model, adapter, ids, labels);
      assertClose(logits, expected.get('logits')!, { atol: 1e-4, what: 'logits' });
      assertClose([ce.item()], expected.get('loss_ce')!, { atol: 1e-5, what: 'CE loss' });
      assertClose([aux ? aux.item() : 0], expected.get('loss_aux')!, { atol: 1e-5, what: 'aux loss' });
      (aux ? ce.add(aux) : ce).backward();
      aux?.dispose();
      const grads = adapterStateDict(adapter, (p) => p.grad!);
      let worst = 0;
      for (const [key, g] of grads) {
        const ref = expected.get(`grad.${key}`);
        assert.ok(ref, `no reference gradient for ${key}`);
        const scale = ref.abs().amax().item();
        const rel = maxAbsDiff(g, ref) / Math.max(scale, 1e-12);
        worst = Math.max(worst, rel);
        assert.ok(rel <= 1e-4, `gradient of ${key}: relative error ${rel.toExponential(2)} > 1e-4`);
      }
      assert.equal(
        grads.size,
        [...expected.keys()].filter((k) => k.startsWith('grad.')).length,
        'every reference gradient compared',
      );
      console.log(
        `# ${name}: logits max abs diff ${maxAbsDiff(logits, expected.get('logits')!).toExponential(2)}, worst gradient relative error ${worst.toExponential(2)}`,
      );
    });
    adapter.dispose();
    model.dispose();
    for (const t of expected.values()) t.dispose();
  });
}
