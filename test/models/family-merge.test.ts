// Merging PEFT's adapters on the Gemma, Gemma 2 and Phi-3 folders (Phi-3's on the fused qkv_proj and
// gate_up_proj): the written folder gives the adapted model's logits when mixlora loads it, and transformers
// loads it cleanly (its config.json as each family's config class reads it, every weight placed) and computes
// the same logits (float32, eager attention). Tolerance: 1e-4 absolute on every logit.
import { test } from 'node:test';
import path from 'node:path';
import { assertClose } from '../helpers/assert.js';
import { referenceDir, tempDir } from '../helpers/fixtures.js';
import { openModel } from '../helpers/reference-adapters.js';
import { peftCases } from '../helpers/reference-libraries.js';
import { runPython } from '../helpers/python.js';
import * as T from '../../src/tensor/index.js';
import { loadAdapter } from '../../src/adapters/io.js';
import { AdapterBatch } from '../../src/adapters/batch.js';
import { writeMergedModel } from '../../src/adapters/merge.js';

const TRANSFORMERS_LOGITS = `
import json, sys, torch
from transformers import AutoModelForCausalLM
model, info = AutoModelForCausalLM.from_pretrained(sys.argv[1], dtype=torch.float32, attn_implementation='eager',
                                                   output_loading_info=True)
problems = {k: v for k, v in info.items() if v}
if problems:
    raise SystemExit(f'transformers did not load the folder cleanly: {problems}')
with torch.no_grad():
    print(json.dumps(model.eval()(input_ids=torch.tensor(json.loads(sys.argv[2]))).logits.flatten().tolist()))
`;

const ATOL = 1e-4;
const FAMILY_CASES = ['lora-gemma2', 'dora-gemma-some', 'dora-phi3-fused'];

for (const { name, model: modelName } of peftCases().filter((c) => FAMILY_CASES.includes(c.name))) {
  test(`merging ${name} writes a folder mixlora and transformers both run as the adapted model (≤ ${ATOL})`, async () => {
    const dir = referenceDir('models', modelName);
    const model = openModel(dir);
    const adapter = await loadAdapter(referenceDir('peft', name, 'adapter'), model, name);
    const out = path.join(tempDir(), 'merged');
    writeMergedModel({ model, tokenizer: null, format: 'hf', path: dir }, adapter, out);
    const ids = [
      [5, 9, 14, 2, 33, 40, 7, 21, 60, 1, 18, 27],
      [3, 3, 8, 50, 12, 44, 29, 31, 6, 15, 58, 10],
    ];
    const merged = openModel(out);
    T.tidy(() =>
      T.noGrad(() => {
        const x = T.tensor(ids, { dtype: 'int64' });
        const adapted = model.forward(x, { hooks: AdapterBatch.all(adapter, { training: false }) }); // [B, T, V]
        assertClose(merged.forward(x), adapted, { atol: ATOL, what: `${name}: merged folder vs adapter` });
        const theirs = JSON.parse(runPython(TRANSFORMERS_LOGITS, [out, JSON.stringify(ids)])) as number[];
        assertClose(adapted.flatten(), theirs, { atol: ATOL, what: `${name}: transformers on the merged folder` });
      }),
    );
    merged.dispose();
    adapter.dispose();
    model.dispose();
  });
}
