// Checks shared by /v1/completions and /v1/chat/completions that the JSON schema cannot express:
// token ids in the vocabulary, the context length, parameters accepted only at their neutral value.
import type { ServeContext } from './context.js';
import { badRequest } from './errors.js';
import type { SamplingParams } from './sampling.js';
import type { SamplingFields } from './schemas.js';

export function checkUnsupported(body: SamplingFields): void {
  for (const field of ['frequency_penalty', 'presence_penalty'] as const) {
    const v = body[field];
    if (v !== undefined && v !== null && v !== 0)
      throw badRequest(`${field} is not supported by this server (only 0)`, field, 'unsupported_parameter');
  }
}

export function stopStrings(body: SamplingFields): string[] {
  const s = body.stop;
  if (s === undefined || s === null) return [];
  return (Array.isArray(s) ? s : [s]).filter((x) => x.length > 0);
}

export function samplingParams(body: SamplingFields, logprobs: number | null): SamplingParams {
  const k = body.top_k ?? null;
  return {
    // OpenAI's default temperature is 1.
    temperature: body.temperature ?? 1,
    topP: body.top_p ?? null,
    topK: k === null || k <= 0 ? null : k,
    seed: body.seed ?? null,
    logprobs,
  };
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
