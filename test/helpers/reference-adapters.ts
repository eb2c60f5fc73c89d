// The reference adapter cases written by test/reference/adapters.py.
import fs from 'node:fs';
import { referenceDir } from './fixtures.js';
import { TEST_COMPUTE_DTYPE, TEST_DEVICE, TEST_DTYPE } from './device.js';
import * as T from '../../src/tensor/index.js';
import { loadAll } from '../../src/io/safetensors.js';
import { readModelConfig } from '../../src/models/config.js';
import { loadHfWeights } from '../../src/models/weights.js';
import { CausalLM } from '../../src/models/causal-lm.js';
import { Adapter } from '../../src/adapters/adapter.js';
import { AdapterBatch } from '../../src/adapters/batch.js';
import { auxLoss } from '../../src/adapters/aux-loss.js';
import { loadAdapter } from '../../src/adapters/io.js';

export function adapterCaseNames(): string[] {
  return JSON.parse(fs.readFileSync(referenceDir('adapters', 'index.json'), 'utf8')) as string[];
}

export function openModel(dir: string): CausalLM {
  const config = readModelConfig(`${dir}/config.json`);
  return new CausalLM(
    config,
    loadHfWeights(dir, config, { dtype: TEST_DTYPE, device: TEST_DEVICE }),
    TEST_COMPUTE_DTYPE,
    TEST_DEVICE,
  );
}

export async function openAdapterCase(
  name: string,
): Promise<{ model: CausalLM; adapter: Adapter; expected: Map<string, T.Tensor> }> {
  const dir = referenceDir('adapters', name);
  const model = openModel(`${dir}/model`);
  const adapter = await loadAdapter(`${dir}/adapter`, model, name);
  const expected = loadAll(`${dir}/expected.safetensors`).tensors;
  return { model, adapter, expected };
}

/** Mean CE of next-token prediction over labels != -100. logits [B, T, V], labels [B, T]. */
export function nextTokenCE(logits: T.Tensor, labels: T.Tensor): T.Tensor {
  const [B, Tn, V] = logits.shape as [number, number, number];
  return T.crossEntropy(
    logits.narrow(1, 0, Tn - 1).reshape((Tn - 1) * B, V),
    labels.narrow(1, 1, Tn - 1).reshape((Tn - 1) * B),
  );
}

/** Logits, CE and aux loss of an adapter on ids (training mode, so routers record). */
export function adaptedLoss(
  model: CausalLM,
  adapter: Adapter,
  ids: T.Tensor,
  labels: T.Tensor,
  efficient = true,
): { logits: T.Tensor; ce: T.Tensor; aux: T.Tensor | null } {
  const batch = AdapterBatch.all(adapter, { training: true, efficient });
  const logits = model.forward(ids, { hooks: batch });
  const ce = nextTokenCE(logits, labels);
  const aux = adapter.config.moe ? auxLoss(batch.routing.get(adapter) ?? [], adapter.config.moe) : null;
  const out = { logits, ce, aux };
  T.keep([...(aux ? [aux] : [])]);
  batch.dispose();
  return out;
}
