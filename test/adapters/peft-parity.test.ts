// LoRA and DoRA against Hugging Face PEFT itself (test/reference/hf_libraries.py): adapters that PEFT made
// (nonzero B, magnitudes off ‖W‖, rsLoRA, biased and tied models, some or all projections) and saved with
// its save_pretrained are loaded as they are, and mixlora's logits (max abs diff ≤ 1e-4), loss (≤ 1e-4)
// and the gradient of every saved adapter tensor (≤ 1e-4 relative to the tensor's largest PEFT value)
// equal the PEFT model's, and merging equals PEFT's merge_and_unload (≤ 1e-5 per weight). Saving such an
// adapter again writes PEFT's tensor names and values (bit for bit) and only keys PEFT's adapter_config.json
// has, with PEFT's values.
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { assertClose, maxAbsDiff } from '../helpers/assert.js';
import { referenceDir, tempDir } from '../helpers/fixtures.js';
import { adaptedLoss, openModel } from '../helpers/reference-adapters.js';
import { peftCases, peftExpected } from '../helpers/reference-libraries.js';
import * as T from '../../src/tensor/index.js';
import { loadAdapter, saveAdapter } from '../../src/adapters/io.js';
import { CONFIG_FILE, WEIGHTS_FILE } from '../../src/adapters/files.js';
import { adapterStateDict } from '../../src/adapters/state-dict.js';
import { loadAll } from '../../src/io/safetensors.js';
import { mergeIntoWeights } from '../../src/adapters/merge.js';

for (const { name, model: modelName } of peftCases()) {
  test(`PEFT parity: ${name} (on ${modelName})`, async () => {
    const model = openModel(referenceDir('models', modelName));
    const adapter = await loadAdapter(referenceDir('peft', name, 'adapter'), model, name);
    const expected = peftExpected(name);
    adapter.requiresGrad_();
    T.tidy(() => {
      const { logits, ce } = adaptedLoss(model, adapter, expected.get('input_ids')!, expected.get('labels')!);
      assertClose(logits, expected.get('logits')!, { atol: 1e-4, what: 'logits' });
      assertClose([ce.item()], expected.get('loss')!, { atol: 1e-4, what: 'loss' });
      ce.backward();
      const grads = adapterStateDict(adapter, (p) => p.grad!);
      const peftKeys = [...expected.keys()].filter((k) => k.startsWith('grad.')).map((k) => k.slice(5));
      assert.deepEqual([...grads.keys()].sort(), peftKeys.sort(), 'the same adapter tensors as PEFT saved');
      let worst = 0;
      for (const [key, g] of grads) {
        const ref = expected.get(`grad.${key}`)!;
        const rel = maxAbsDiff(g, ref) / Math.max(ref.abs().amax().item(), 1e-12);
        worst = Math.max(worst, rel);
        assert.ok(rel <= 1e-4, `gradient of ${key}: relative error ${rel.toExponential(2)} > 1e-4`);
      }
      console.log(
        `# ${name}: logits max abs diff ${maxAbsDiff(logits, expected.get('logits')!).toExponential(2)}, worst gradient relative error ${worst.toExponential(2)}`,
      );
    });
    T.tidy(() => {
      const { tensors, merged } = mergeIntoWeights(model, adapter);
      const keys = [...expected.keys()].filter((k) => k.startsWith('merged.'));
      assert.equal(keys.length, merged.length, 'every merged projection compared');
      for (const k of keys) assertClose(tensors.get(k.slice(7))!, expected.get(k)!, { atol: 1e-5, what: k });
      merged.forEach((t) => t.dispose());
    });
    adapter.dispose();
    model.dispose();
    for (const t of expected.values()) t.dispose();
  });
}

for (const { name, model: modelName } of peftCases()) {
  test(`saving PEFT's ${name} again writes PEFT's names, values and config keys`, async () => {
    const model = openModel(referenceDir('models', modelName));
    const peftDir = referenceDir('peft', name, 'adapter');
    const adapter = await loadAdapter(peftDir, model, name);
    const dir = path.join(tempDir(), 'saved');
    saveAdapter(dir, adapter);
    T.tidy(() => {
      const ours = loadAll(path.join(dir, WEIGHTS_FILE)).tensors;
      const peft = loadAll(path.join(peftDir, WEIGHTS_FILE)).tensors;
      assert.deepEqual([...ours.keys()].sort(), [...peft.keys()].sort(), 'tensor names');
      for (const [k, t] of ours) assertClose(t, peft.get(k)!, { atol: 0, what: k });
    });
    const read = (d: string) =>
      JSON.parse(fs.readFileSync(path.join(d, CONFIG_FILE), 'utf8')) as Record<string, unknown>;
    const ours = read(dir);
    const peft = read(peftDir);
    for (const [k, v] of Object.entries(ours)) {
      assert.ok(k in peft, `we write '${k}', which PEFT's LoraConfig does not have`);
      if (k === 'base_model_name_or_path') continue;
      // PEFT keeps target_modules as a set; lora_dropout 0 is 0.0 in PEFT's JSON, the same number.
      const norm = (x: unknown) => (k === 'target_modules' ? [...(x as string[])].sort() : x);
      assert.deepEqual(norm(v), norm(peft[k]), `config '${k}'`);
    }
    adapter.dispose();
    model.dispose();
  });
}
