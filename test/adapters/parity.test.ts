// LoRA, DoRA, MixLoRA, MixDoRA, dynamic and switch routing against the independent PyTorch reference
// (test/reference/adapters.py), with nonzero B: logits (max abs diff ≤ 1e-4), CE and aux losses (≤ 1e-5), and
// the gradient of every adapter tensor (≤ 1e-4 relative to the tensor's largest reference value). On another
// device or in bfloat16 (MIXLORA_TEST_DEVICE / MIXLORA_TEST_DTYPE, test/helpers/device.ts): the same
// comparisons; bfloat16 as relative errors of logits, losses and all gradients together, within twice the
// PyTorch reference's own bfloat16 deviation (floors and reasons in that file) in the same mode: computing in
// bfloat16, or in float32 over weights rounded to bfloat16 (a CPU without bfloat16 arithmetic,
// src/tensor/compute-mode.ts; there the rounding of the weights alone moves a capacity-limited switch router's
// choices, by 28% of the logits in the mixlora-switch case, PyTorch's reference included).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { maxAbsDiff } from '../helpers/assert.js';
import { adaptedLoss, adapterCaseNames, openAdapterCase } from '../helpers/reference-adapters.js';
import * as T from '../../src/tensor/index.js';
import { adapterStateDict } from '../../src/adapters/state-dict.js';
import {
  PLACEMENT,
  TEST_COMPUTE_DTYPE,
  TEST_DEVICE,
  TEST_DTYPE,
  assertParity,
  bf16Bound,
  host,
  relativeError,
} from '../helpers/device.js';

// The reference's own bfloat16 deviation in the mode the model computes in.
const OWN = TEST_COMPUTE_DTYPE === 'float32' ? 'bf16w_rel' : 'bf16_rel';

for (const name of adapterCaseNames()) {
  test(`adapter parity with PyTorch: ${name}${PLACEMENT}`, async () => {
    const { model, adapter, expected } = await openAdapterCase(name);
    adapter.requiresGrad_();
    T.tidy(() => {
      const onDevice = (t: T.Tensor) => (TEST_DEVICE === 'cpu' ? t : t.to(TEST_DEVICE));
      const ids = onDevice(expected.get('input_ids')!);
      const labels = onDevice(expected.get('labels')!);
      const out = adaptedLoss(model, adapter, ids, labels);
      const { ce, aux } = out;
      const logits = host(out.logits);
      const own = (k: string) => expected.get(`${OWN}.${k}`)?.item(); // the reference's own bf16 deviation
      assertParity('logits', logits, expected.get('logits')!, 1e-4, 'logits', bf16Bound('logits', own('logits')));
      assertParity('loss', [ce.item()], expected.get('loss_ce')!, 1e-5, 'CE loss');
      assertParity('loss', [aux ? aux.item() : 0], expected.get('loss_aux')!, 1e-5, 'aux loss');
      (aux ? ce.add(aux) : ce).backward();
      aux?.dispose();
      const grads = adapterStateDict(adapter, (p) => p.grad!);
      let worst = 0;
      const all: number[][] = [[], []]; // every gradient, ours and the reference's, for the bfloat16 bound
      for (const [key, g] of grads) {
        const ref = expected.get(`grad.${key}`);
        assert.ok(ref, `no reference gradient for ${key}`);
        const scale = ref.abs().amax().item();
        if (TEST_DTYPE === 'bfloat16') {
          const [ours, theirs] = [host(g).toNumbers(), ref.toNumbers()];
          all[0]!.push(...ours);
          all[1]!.push(...theirs);
          worst = Math.max(worst, relativeError(ours, theirs));
          continue;
        }
        const rel = maxAbsDiff(host(g), ref) / Math.max(scale, 1e-12);
        worst = Math.max(worst, rel);
        assert.ok(rel <= 1e-4, `gradient of ${key}: relative error ${rel.toExponential(2)} > 1e-4`);
      }
      if (TEST_DTYPE === 'bfloat16')
        assertParity('grads', all[0]!, all[1]!, 0, 'all gradients together', bf16Bound('grads', own('grads')));
      assert.equal(
        grads.size,
        [...expected.keys()].filter((k) => k.startsWith('grad.')).length,
        'every reference gradient compared',
      );
      console.log(
        `# ${name}: logits max abs diff ${maxAbsDiff(logits, expected.get('logits')!).toExponential(2)}, relative error ${relativeError(logits.toNumbers(), expected.get('logits')!.toNumbers()).toExponential(2)}, worst gradient relative error ${worst.toExponential(2)}` +
          (TEST_DTYPE === 'bfloat16' ? `, all gradients ${relativeError(all[0]!, all[1]!).toExponential(2)}` : ''),
      );
    });
    adapter.dispose();
    model.dispose();
    for (const t of expected.values()) t.dispose();
  });
}
