// The fixtures computed by Hugging Face transformers and PEFT themselves (test/reference/hf_libraries.py).
import fs from 'node:fs';
import { referenceDir } from './fixtures.js';
import type * as T from '../../src/tensor/index.js';
import { loadAll } from '../../src/io/safetensors.js';

/** Model folders of test/reference/models.py that transformers ran. */
export function transformersCaseNames(): string[] {
  return JSON.parse(fs.readFileSync(referenceDir('transformers', 'index.json'), 'utf8')) as string[];
}

/** PEFT adapter cases and the model folder each was made on. */
export function peftCases(): { name: string; model: string }[] {
  return JSON.parse(fs.readFileSync(referenceDir('peft', 'index.json'), 'utf8')) as { name: string; model: string }[];
}

/** transformers' outputs for one model folder (the caller disposes them). */
export function transformersExpected(name: string): Map<string, T.Tensor> {
  return loadAll(referenceDir('transformers', `${name}.safetensors`)).tensors;
}

/** PEFT's outputs for one adapter case (the caller disposes them). */
export function peftExpected(name: string): Map<string, T.Tensor> {
  return loadAll(referenceDir('peft', name, 'expected.safetensors')).tensors;
}
