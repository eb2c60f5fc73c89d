// Perplexity of a model (optionally with an adapter) over JSONL data: {"text"} lines (tokenised, BOS
// per the tokenizer's config) or pre-tokenised {"input_ids", "labels"?} lines (used exactly as given).
// Position t predicts token t+1; labels of -100 are not scored.
import { crossEntropy } from '../tensor/ops.js';
import { noGrad } from '../tensor/autograd.js';
import { tidy } from '../tensor/scope.js';
import type { CausalLM } from '../models/causal-lm.js';
import type { ForwardHooks } from '../models/hooks.js';
import type { TextTokenizer } from '../tokenizer/tokenizer.js';
import { readJsonl } from '../data/jsonl.js';
import { pretokenized, scoredTokens, type Example } from '../data/examples.js';
import { nextTokenTargets, packIds } from '../data/packing.js';
import { UserError } from '../util/errors.js';

export type PerplexityExample = Example;
export interface PerplexityResult {
  examples: { tokens: number; nll: number | null }[];
  mean_nll: number | null;
  perplexity: number | null;
}

/** With `maxTokens` (e.g. 8 × the model's context), a record certainly longer is refused before it is
 * tokenised or run (a text of more than maxTokens × the longest token's characters has more tokens). */
export function readPerplexityData(
  file: string,
  tokenizer: TextTokenizer,
  vocabSize: number,
  opts: { maxTokens?: number } = {},
): PerplexityExample[] {
  const maxTokens = opts.maxTokens ?? Number.POSITIVE_INFINITY;
  const tooLong = (line: number, what: string) =>
    new UserError(`${file}:${line}: ${what} is longer than ${maxTokens} tokens; split it into shorter records`);
  const records = readJsonl(file);
  if (records.length === 0)
    throw new UserError(`${file}: no records (expected JSONL lines with "text" or "input_ids")`);
  return records.map(({ value, line }) => {
    if (value === null || typeof value !== 'object' || Array.isArray(value))
      throw new UserError(`${file}:${line}: expected an object with "text" or "input_ids"`);
    const o = value as Record<string, unknown>;
    if (typeof o.text === 'string') {
      if (o.text.length > maxTokens * tokenizer.maxTokenChars) throw tooLong(line, '"text"');
      const ids = tokenizer.encode(o.text);
      if (ids.length > maxTokens) throw tooLong(line, '"text"');
      return { inputIds: ids, labels: ids };
    }
    if (o.input_ids !== undefined) {
      if (Array.isArray(o.input_ids) && o.input_ids.length > maxTokens) throw tooLong(line, '"input_ids"');
      return pretokenized(o, `${file}:${line}`, vocabSize);
    }
    throw new UserError(`${file}:${line}: expected "text" (a string) or "input_ids" (a list of token ids)`);
  });
}

/** Summed NLL and scored-token count of each example, batched with right padding. */
export function perplexity(
  model: CausalLM,
  examples: PerplexityExample[],
  opts: { batchSize: number; hooks?: ForwardHooks; onBatch?: (done: number) => void },
): PerplexityResult {
  const sums: number[] = [];
  const counts: number[] = [];
  for (let start = 0; start < examples.length; start += opts.batchSize) {
    const batch = examples.slice(start, start + opts.batchSize);
    const nll = noGrad(() =>
      tidy(() => {
        const { ids, mask, T } = packIds(
          batch.map((e) => e.inputIds),
          { pad: 0, device: model.device },
        ); // [B, T]
        const logits = model.forward(ids, { attentionMask: mask, hooks: opts.hooks }); // [B, T, V]
        const tgt = nextTokenTargets(batch, T, model.device); // [B, T]
        const V = logits.size(-1);
        return crossEntropy(logits.reshape(-1, V), tgt.reshape(-1), { reduction: 'none' })
          .reshape(batch.length, T)
          .sum(1)
          .toNumbers();
      }),
    );
    batch.forEach((e, i) => {
      sums.push(nll[i]!);
      counts.push(scoredTokens(e));
    });
    opts.onBatch?.(Math.min(start + opts.batchSize, examples.length));
  }
  const total = counts.reduce((a, b) => a + b, 0);
  const totalNll = sums.reduce((a, b) => a + b, 0);
  const mean = total > 0 ? totalNll / total : null;
  return {
    examples: sums.map((s, i) => ({ tokens: counts[i]!, nll: counts[i]! > 0 ? s / counts[i]! : null })),
    mean_nll: mean,
    perplexity: mean === null ? null : Math.exp(mean),
  };
}
