// Opening a model from disk: a Hugging Face folder, or a llama2.c checkpoint with its tokenizer.
import fs from 'node:fs';
import path from 'node:path';
import type { DType } from '../tensor/dtype.js';
import { ones } from '../tensor/create.js';
import { tidy } from '../tensor/scope.js';
import type { Device } from '../tensor/tensor.js';
import type { QuantFormat } from '../quant/format.js';
import { TextTokenizer } from '../tokenizer/tokenizer.js';
import { UserError } from '../util/errors.js';
import { readModelConfig, type ModelConfig } from './config.js';
import { CausalLM } from './llama.js';
import { loadLlama2cWeights, readLlama2cConfig } from './llama2c.js';
import { loadHfWeights } from './weights.js';

export interface LoadOptions {
  /** Compute dtype of the frozen weights (float32 by default). */
  dtype?: DType;
  device?: Device;
  /** A tokenizer file or folder; for llama2.c checkpoints their tok*.bin. */
  tokenizer?: string | null;
  /** Keep the decoder projections quantised (QLoRA-style); null/absent: as loaded. */
  quantize?: QuantFormat | null;
}

export type ModelFormat = 'hf' | 'llama2c';

export interface LoadedModel {
  model: CausalLM;
  tokenizer: TextTokenizer;
  format: ModelFormat;
  path: string;
}

/** Refuses a compute dtype this libtorch cannot multiply matrices in on the device (libtorch 1.13
 * has no float16 matmul on CPU), with a clear message instead of an error deep in the first layer. */
export function checkComputeDType(dtype: DType, device: Device, where = '--dtype'): void {
  if (dtype === 'float32') return;
  try {
    tidy(() => ones([2, 2], { dtype, device }).matmul(ones([2, 2], { dtype, device })));
  } catch {
    throw new UserError(
      `${where}: this libtorch cannot compute in ${dtype} on ${device}; use ${dtype === 'float16' ? 'bfloat16 or ' : ''}float32`,
    );
  }
}

/** Extra stop tokens of generation_config.json (LLaMA-3 instruct lists several). */
function generationEosIds(dir: string): number[] {
  const f = path.join(dir, 'generation_config.json');
  if (!fs.existsSync(f)) return [];
  try {
    const v = JSON.parse(fs.readFileSync(f, 'utf8')).eos_token_id;
    return (Array.isArray(v) ? v : v === undefined || v === null ? [] : [v]).filter((x) => Number.isSafeInteger(x));
  } catch {
    return [];
  }
}

function loadTokenizerFor(spec: string, config: ModelConfig): TextTokenizer {
  if (fs.existsSync(spec) && fs.statSync(spec).isDirectory()) return TextTokenizer.fromDir(spec);
  if (spec.endsWith('.json')) return TextTokenizer.fromDir(path.dirname(spec));
  if (spec.endsWith('.model')) return TextTokenizer.fromSentencePiece(spec);
  return TextTokenizer.fromLlama2c(spec, config.vocabSize);
}

export function isLlama2cCheckpoint(p: string): boolean {
  return fs.existsSync(p) && fs.statSync(p).isFile();
}

export function readConfigOf(p: string): ModelConfig {
  if (!fs.existsSync(p)) throw new UserError(`${p}: no such file or folder`);
  if (isLlama2cCheckpoint(p)) return readLlama2cConfig(p).config;
  return readModelConfig(path.join(p, 'config.json'));
}

/** A model's tokenizer: the one given, else the one beside it (llama2.c: tok<vocab>.bin or tokenizer.bin in
 * the checkpoint's folder; Hugging Face: the folder's tokenizer files). */
function tokenizerFor(
  p: string,
  format: ModelFormat,
  config: ModelConfig,
  given: string | null | undefined,
): TextTokenizer {
  if (given) return loadTokenizerFor(given, config);
  if (format === 'hf') return TextTokenizer.fromDir(p);
  const guess = [`tok${config.vocabSize}.bin`, 'tokenizer.bin']
    .map((n) => path.join(path.dirname(p), n))
    .find((f) => fs.existsSync(f));
  if (!guess)
    throw new UserError(`${p}: a llama2.c checkpoint needs its tokenizer: pass --tokenizer tok${config.vocabSize}.bin`);
  return loadTokenizerFor(guess, config);
}

/** Opens the model at `p`; `tokenizer` picks its tokenizer once the format and config are known (the
 * tokenizer's EOS joins the stop tokens before the model is built). */
function openModel<Tok extends TextTokenizer | null>(
  p: string,
  opts: LoadOptions,
  tokenizer: (format: ModelFormat, config: ModelConfig) => Tok,
): { model: CausalLM; tokenizer: Tok; format: ModelFormat; path: string } {
  const dtype = opts.dtype ?? 'float32';
  const device = opts.device ?? 'cpu';
  checkComputeDType(dtype, device);
  if (!fs.existsSync(p)) throw new UserError(`${p}: no such file or folder`);
  if (isLlama2cCheckpoint(p)) {
    const { config } = readLlama2cConfig(p);
    const tok = tokenizer('llama2c', config);
    const weights = loadLlama2cWeights(p, config, { dtype, device, quantize: opts.quantize ?? null });
    return { model: new CausalLM(config, weights, dtype, device), tokenizer: tok, format: 'llama2c', path: p };
  }
  const config = readModelConfig(path.join(p, 'config.json'));
  for (const id of generationEosIds(p)) if (!config.eosTokenIds.includes(id)) config.eosTokenIds.push(id);
  const tok = tokenizer('hf', config);
  if (tok && tok.eosId !== null && !config.eosTokenIds.includes(tok.eosId)) config.eosTokenIds.push(tok.eosId);
  const weights = loadHfWeights(p, config, { dtype, device, quantize: opts.quantize ?? null });
  return { model: new CausalLM(config, weights, dtype, device), tokenizer: tok, format: 'hf', path: p };
}

export function loadModel(p: string, opts: LoadOptions = {}): LoadedModel {
  return openModel(p, opts, (format, config) => tokenizerFor(p, format, config, opts.tokenizer));
}

/** Like loadModel, but a Hugging Face folder without tokenizer files gives `tokenizer: null` (training
 * on pre-tokenised data needs none). */
export function loadModelForTraining(
  p: string,
  opts: LoadOptions = {},
): Omit<LoadedModel, 'tokenizer'> & { tokenizer: TextTokenizer | null } {
  const hasTokenizer = ['tokenizer.json', 'tokenizer.model'].some((f) => fs.existsSync(path.join(p, f)));
  return openModel(p, opts, (format, config) =>
    format === 'hf' && !hasTokenizer && !opts.tokenizer ? null : tokenizerFor(p, format, config, opts.tokenizer),
  );
}
