// The tokenizer that goes with a model: the one the user names, else the one beside the model
// (llama2.c: tok<vocab>.bin or tokenizer.bin in the checkpoint's folder; Hugging Face: the folder's files).
import fs from 'node:fs';
import path from 'node:path';
import { TextTokenizer } from '../tokenizer/tokenizer.js';
import { UserError } from '../util/errors.js';
import type { ModelConfig } from './config.js';
import type { ModelFormat } from './folder.js';

/** The tokenizer that `spec` names: a folder, its tokenizer.json, a SentencePiece .model or a llama2.c .bin. */
function tokenizerFromSpec(spec: string, config: ModelConfig): TextTokenizer {
  if (fs.existsSync(spec) && fs.statSync(spec).isDirectory()) return TextTokenizer.fromDir(spec);
  if (spec.endsWith('.json')) return TextTokenizer.fromDir(path.dirname(spec));
  if (spec.endsWith('.model')) return TextTokenizer.fromSentencePiece(spec);
  return TextTokenizer.fromLlama2c(spec, config.vocabSize);
}

/** Whether the Hugging Face folder `dir` has tokenizer files of its own. */
export function hasTokenizerFiles(dir: string): boolean {
  return ['tokenizer.json', 'tokenizer.model'].some((f) => fs.existsSync(path.join(dir, f)));
}

/** The tokenizer of the model at `p`: `given` when set, else the one beside the model. */
export function modelTokenizer(
  p: string,
  format: ModelFormat,
  config: ModelConfig,
  given: string | null | undefined,
): TextTokenizer {
  if (given) return tokenizerFromSpec(given, config);
  if (format === 'hf') return TextTokenizer.fromDir(p);
  const guess = [`tok${config.vocabSize}.bin`, 'tokenizer.bin']
    .map((n) => path.join(path.dirname(p), n))
    .find((f) => fs.existsSync(f));
  if (!guess)
    throw new UserError(`${p}: a llama2.c checkpoint needs its tokenizer: pass --tokenizer tok${config.vocabSize}.bin`);
  return tokenizerFromSpec(guess, config);
}
