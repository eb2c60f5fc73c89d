// Opening the tiny reference models written by test/reference/models.py.
import fs from 'node:fs';
import { referenceDir } from './fixtures.js';
import { TEST_COMPUTE_DTYPE, TEST_DEVICE, TEST_DTYPE } from './device.js';
import type * as T from '../../src/tensor/index.js';
import { loadAll } from '../../src/io/safetensors.js';
import { readModelConfig } from '../../src/models/config.js';
import { loadHfWeights } from '../../src/models/weights.js';
import { CausalLM } from '../../src/models/causal-lm.js';

export function referenceModelNames(): string[] {
  return JSON.parse(fs.readFileSync(referenceDir('models', 'index.json'), 'utf8')) as string[];
}

/** The model (on the test device, in the test dtype) with its input ids (there too) and expected logits (on
 * the CPU), kept: the caller disposes. */
export function openReferenceModel(name: string): { model: CausalLM; ids: T.Tensor; logits: T.Tensor } {
  const dir = referenceDir('models', name);
  const config = readModelConfig(`${dir}/config.json`);
  const model = new CausalLM(
    config,
    loadHfWeights(dir, config, { dtype: TEST_DTYPE, device: TEST_DEVICE }),
    TEST_COMPUTE_DTYPE,
    TEST_DEVICE,
  );
  const { tensors } = loadAll(`${dir}/expected.safetensors`);
  const ids = tensors.get('input_ids')!;
  return {
    model,
    ids: (TEST_DEVICE === 'cpu' ? ids : ids.to(TEST_DEVICE)).keep(),
    logits: tensors.get('logits')!.keep(),
  };
}
