// Checks shared by /v1/completions and /v1/chat/completions that the JSON schema cannot express:
// token ids in the vocabulary, the context length, parameters accepted only at their neutral value.
import type { ServeContext } from './context.js';
import { badRequest } from './errors.js';
import type { SamplingParams, TokenConstraint } from './sampling.js';
import type { SamplingFields } from './schemas.js';
import { compileResponseFormat } from './structured/index.js';

export function stopStrings(body: SamplingFields): string[] {
  const s = body.stop;
  if (s === undefined || s === null) return [];
  return (Array.isArray(s) ? s : [s]).filter((x) => x.length > 0);
}

export function samplingParams(ctx: ServeContext, body: SamplingFields, logprobs: number | null): SamplingParams {
  const k = body.top_k ?? null;
  const V = ctx.model.config.vocabSize;
  const inVocab = (id: number, param: string) => {
    if (id >= V) throw badRequest(`${param} holds token id ${id}, outside the vocabulary (0..${V - 1})`, param);
    return id;
  };
  const bias = body.logit_bias
    ? new Map(Object.entries(body.logit_bias).map(([id, b]) => [inVocab(Number(id), 'logit_bias'), b] as const))
    : null;
  return {
    // OpenAI's default temperature is 1.
    temperature: body.temperature ?? 1,
    topP: body.top_p ?? null,
    topK: k === null || k <= 0 ? null : k,
    seed: body.seed ?? null,
    logprobs,
    frequencyPenalty: body.frequency_penalty ?? 0,
    presencePenalty: body.presence_penalty ?? 0,
    logitBias: bias,
    stopTokenIds: (body.stop_token_ids ?? []).map((id) => inVocab(id, 'stop_token_ids')),
    minTokens: body.min_tokens ?? 0,
    repetitionPenalty: body.repetition_penalty ?? null,
    ignoreEos: body.ignore_eos === true,
  };
}

/** Refuses, before tokenising it, a prompt text that cannot fit the context whatever its tokens: no
 * token is longer than the tokenizer's longest, so past (context + 1) · that many characters the prompt
 * is too long (a 1 MB prompt is answered at once instead of blocking the server while it is tokenised). */
export function promptTooLong(ctx: ServeContext, text: string, param: string): void {
  const limit = ctx.model.config.maxPositionEmbeddings;
  const maxChars = (limit + 1) * ctx.tokenizer.maxTokenChars;
  if (text.length > maxChars)
    throw badRequest(
      `This model's maximum context length is ${limit} tokens. However, ${param} has ${text.length} characters, ` +
        `more than ${limit} tokens of this tokenizer can hold (${maxChars}). Please reduce ${param}.`,
      param,
      'context_length_exceeded',
    );
}

/** Refuses ids outside the vocabulary and empty prompts. */
export function checkPromptIds(ctx: ServeContext, prompts: number[][], param: string): void {
  const V = ctx.model.config.vocabSize;
  prompts.forEach((ids, i) => {
    if (ids.length === 0) throw badRequest(`${param}${prompts.length > 1 ? `[${i}]` : ''} is empty (0 tokens)`, param);
    const bad = ids.find((id) => id >= V);
    if (bad !== undefined)
      throw badRequest(`${param} holds token id ${bad}, outside the vocabulary (0..${V - 1})`, param);
  });
}

/** The prompt plus the tokens to generate must fit the model's context. */
export function checkContext(ctx: ServeContext, prompts: number[][], maxTokens: number, param: string): void {
  const limit = ctx.model.config.maxPositionEmbeddings;
  const longest = Math.max(...prompts.map((p) => p.length));
  if (longest + maxTokens > limit)
    throw badRequest(
      `This model's maximum context length is ${limit} tokens. However, you requested ${longest + maxTokens} tokens ` +
        `(${longest} in the prompt, ${maxTokens} for the completion). Please reduce the prompt or ${param}.`,
      param,
      'context_length_exceeded',
    );
}

/** The request's response_format compiled for the served model: a fresh constraint per choice, or null
 * for none and {"type": "text"}. Throws a 400 naming the field for a malformed value, a schema that cannot
 * be enforced or one too costly to compile (the first use of a schema compiles it on the event loop;
 * later ones hit the cache). */
export async function responseConstraint(
  ctx: ServeContext,
  body: SamplingFields,
): Promise<(() => TokenConstraint) | null> {
  const grammar = await compileResponseFormat(body.response_format, ctx.tokenizer, {
    vocabSize: ctx.model.config.vocabSize,
    stopIds: ctx.stopIds,
  });
  return grammar ? () => grammar.createConstraint() : null;
}
