// Opening the tiny reference models written by test/reference/models.py.
import fs from 'node:fs';
import { referenceDir } from './fixtures.js';
import type * as T from '../../src/tensor/index.js';
import { loadAll } from '../../src/io/safetensors.js';
import { readModelConfig } from '../../src/models/config.js';
import { loadHfWeights } from '../../src/models/weights.js';
import { CausalLM } from '../../src/models/llama.js';

export function referenceModelNames(): string[] {
  return JSON.parse(fs.readFileSync(referenceDir('models', 'index.json'), 'utf8')) as string[];
}

/** The model with its test input ids and expected logits (kept: the caller disposes). */
export function openReferenceModel(name: string): { model: CausalLM; ids: T.Tensor; logits: T.Tensor } {
  const dir = referenceDir('models', name);
  const config = readModelConfig(`${dir}/config.json`);
  const model = new CausalLM(config, loadHfWeights(dir, config, { dtype: 'float32', device: 'cpu' }), 'float32', 'cpu');
  const { tensors } = loadAll(`${dir}/expected.safetensors`);
  return { model, ids: tensors.get('input_ids')!.keep(), logits: tensors.get('logits')!.keep() };
}
