// A model on disk: a llama2.c checkpoint (one file) or a Hugging Face folder; its format, its config and
// the extra stop tokens of its generation config, read without building the model.
import fs from 'node:fs';
import path from 'node:path';
import { UserError } from '../util/errors.js';
import { readModelConfig, type ModelConfig } from './config.js';
import { readLlama2cConfig } from './llama2c.js';

export type ModelFormat = 'hf' | 'llama2c';

export function isLlama2cCheckpoint(p: string): boolean {
  return fs.existsSync(p) && fs.statSync(p).isFile();
}

/** The format of the model at `p`: a file is a llama2.c checkpoint, a folder Hugging Face's. */
export function modelFormatOf(p: string): ModelFormat {
  if (!fs.existsSync(p)) throw new UserError(`${p}: no such file or folder`);
  return isLlama2cCheckpoint(p) ? 'llama2c' : 'hf';
}

export function readConfigOf(p: string): ModelConfig {
  if (modelFormatOf(p) === 'llama2c') return readLlama2cConfig(p).config;
  return readModelConfig(path.join(p, 'config.json'));
}

/** Extra stop tokens of generation_config.json (LLaMA-3 instruct lists several). */
export function generationEosIds(dir: string): number[] {
  const f = path.join(dir, 'generation_config.json');
  if (!fs.existsSync(f)) return [];
  try {
    const v = JSON.parse(fs.readFileSync(f, 'utf8')).eos_token_id;
    return (Array.isArray(v) ? v : v === undefined || v === null ? [] : [v]).filter((x) => Number.isSafeInteger(x));
  } catch {
    return [];
  }
}
