// Opening a model from disk: a Hugging Face folder, or a llama2.c checkpoint with its tokenizer, built
// into a CausalLM (folder.ts reads what is on disk, model-tokenizer.ts finds the tokenizer).
import path from 'node:path';
import type { DType } from '../tensor/dtype.js';
import { computeMode, type Bf16Compute, type ComputeMode } from '../tensor/compute-mode.js';
import { checkComputeDType } from '../tensor/targets.js';
import type { Device } from '../tensor/tensor.js';
import type { QuantFormat } from '../quant/format.js';
import type { TextTokenizer } from '../tokenizer/tokenizer.js';
import { readModelConfig, type ModelConfig } from './config.js';
import { generationEosIds, modelFormatOf, type ModelFormat } from './folder.js';
import { CausalLM } from './causal-lm.js';
import { loadLlama2cWeights, readLlama2cConfig } from './llama2c.js';
import { hasTokenizerFiles, modelTokenizer } from './model-tokenizer.js';
import { loadHfWeights, readHfWeights, weightSlots, weightSpecs, type FrozenWeight } from './weights.js';
import { shardedCausalLM } from './sharded-base.js';
import type { Group } from '../distributed/group.js';

export interface LoadOptions {
  /** dtype of the frozen weights (float32 by default), and of the computation but for bfloat16 (bf16Compute). */
  dtype?: DType;
  /** How a bfloat16 model computes (src/tensor/compute-mode.ts): auto (the default, or MIXLORA_BF16_COMPUTE)
   * decides from the CPU; native: in bfloat16; float32: in float32 over the bfloat16 weights. */
  bf16Compute?: Bf16Compute;
  device?: Device;
  /** A tokenizer file or folder; for llama2.c checkpoints their tok*.bin. */
  tokenizer?: string | null;
  /** Keep the decoder projections quantised (QLoRA-style); null/absent: as loaded. */
  quantize?: QuantFormat | null;
  /** shard_base: this rank keeps 1/W of the frozen weights (src/models/sharded-base.ts). A Hugging Face folder
   * is read one tensor at a time and each unit sharded as it completes; a llama2.c checkpoint (small models)
   * is read whole first. */
  shard?: Group | null;
}

export interface LoadedModel {
  model: CausalLM;
  tokenizer: TextTokenizer;
  format: ModelFormat;
  path: string;
  /** Which dtype the model computes in, and why. */
  compute: ComputeMode;
}

/** Opens the model at `p`; `tokenizer` picks its tokenizer once the format and config are known (the
 * tokenizer's EOS joins the stop tokens before the model is built). */
function openModel<Tok extends TextTokenizer | null>(
  p: string,
  opts: LoadOptions,
  tokenizer: (format: ModelFormat, config: ModelConfig) => Tok,
): { model: CausalLM; tokenizer: Tok; format: ModelFormat; path: string; compute: ComputeMode } {
  const dtype = opts.dtype ?? 'float32';
  const device = opts.device ?? 'cpu';
  const compute = computeMode(dtype, device, opts.bf16Compute);
  checkComputeDType(compute.compute, device, '--dtype');
  if (modelFormatOf(p) === 'llama2c') {
    const { config } = readLlama2cConfig(p);
    const tok = tokenizer('llama2c', config);
    const whole = loadLlama2cWeights(p, config, { dtype, device, quantize: opts.quantize ?? null });
    const loaded = { tokenizer: tok, format: 'llama2c' as const, path: p, compute };
    if (!opts.shard) return { model: new CausalLM(config, whole, compute.compute, device), ...loaded };
    const slots = weightSlots(config, whole);
    const stream = [...slots].map(([n, slot]): [string, FrozenWeight] => [n, slot.get()]);
    return {
      model: shardedCausalLM(opts.shard, config, compute.compute, device, { names: [...slots.keys()], stream }),
      ...loaded,
    };
  }
  const config = readModelConfig(path.join(p, 'config.json'));
  for (const id of generationEosIds(p)) if (!config.eosTokenIds.includes(id)) config.eosTokenIds.push(id);
  const tok = tokenizer('hf', config);
  if (tok && tok.eosId !== null && !config.eosTokenIds.includes(tok.eosId)) config.eosTokenIds.push(tok.eosId);
  const read = { dtype, device, quantize: opts.quantize ?? null };
  const model = opts.shard
    ? shardedCausalLM(opts.shard, config, compute.compute, device, {
        names: weightSpecs(config).map((s) => s.name),
        stream: readHfWeights(p, config, read),
      })
    : new CausalLM(config, loadHfWeights(p, config, read), compute.compute, device);
  return {
    model,
    tokenizer: tok,
    format: 'hf',
    path: p,
    compute,
  };
}

export function loadModel(p: string, opts: LoadOptions = {}): LoadedModel {
  return openModel(p, opts, (format, config) => modelTokenizer(p, format, config, opts.tokenizer));
}

/** Like loadModel, but a Hugging Face folder without tokenizer files gives `tokenizer: null` (training
 * on pre-tokenised data needs none). */
export function loadModelForTraining(
  p: string,
  opts: LoadOptions = {},
): Omit<LoadedModel, 'tokenizer'> & { tokenizer: TextTokenizer | null } {
  const hasTokenizer = hasTokenizerFiles(p);
  return openModel(p, opts, (format, config) =>
    format === 'hf' && !hasTokenizer && !opts.tokenizer ? null : modelTokenizer(p, format, config, opts.tokenizer),
  );
}
