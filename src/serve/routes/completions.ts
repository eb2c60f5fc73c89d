// POST /v1/completions (OpenAI's legacy completions: a prompt in, text out).
import type { FastifyInstance } from 'fastify';
import type { ServeContext } from '../context.js';
import type { ChoiceText } from '../choice.js';
import type { TokenChoice } from '../sampling.js';
import { completionBody, type CompletionRequest } from '../schemas.js';
import { checkContext, checkPromptIds, checkUnsupported, samplingParams, stopStrings } from '../request.js';
import { respond, responseId, withModel } from '../respond.js';

/** Token ids of each prompt: strings through the tokenizer (BOS as its config says), ids as given. */
function promptIds(ctx: ServeContext, prompt: CompletionRequest['prompt']): number[][] {
  if (typeof prompt === 'string') return [ctx.tokenizer.encode(prompt)];
  if (prompt.every((p) => typeof p === 'number')) return [prompt as number[]];
  return (prompt as (string | number[])[]).map((p) => (typeof p === 'string' ? ctx.tokenizer.encode(p) : p));
}

/** OpenAI's completion logprobs: tokens, their logprobs, the top alternatives and text offsets. */
function completionLogprobs(ctx: ServeContext, scored: TokenChoice[], offset: number) {
  const tokenText = (id: number) => ctx.tokenizer.decode([id], { skipSpecial: false });
  const text_offset: number[] = [];
  let at = offset;
  for (const s of scored) {
    text_offset.push(at);
    at += tokenText(s.id).length;
  }
  return {
    tokens: scored.map((s) => tokenText(s.id)),
    token_logprobs: scored.map((s) => s.logprob!),
    top_logprobs: scored.map((s) => Object.fromEntries((s.top ?? []).map(([id, lp]) => [tokenText(id), lp]))),
    text_offset,
  };
}

export function completionRoutes(app: FastifyInstance, ctx: ServeContext): void {
  app.post('/v1/completions', { schema: { body: completionBody } }, async (req, reply) => {
    const body = req.body as CompletionRequest;
    return withModel(ctx, body.model, async (lease) => {
      checkUnsupported(body);
      const prompts = promptIds(ctx, body.prompt);
      checkPromptIds(ctx, prompts, 'prompt');
      const maxTokens = body.max_tokens ?? 16; // OpenAI's default for completions
      checkContext(ctx, prompts, maxTokens, 'max_tokens');
      const n = body.n ?? 1;
      const wantLogprobs = body.logprobs ?? null;
      const echo = body.echo === true;
      const promptTexts = prompts.map((p) => ctx.tokenizer.decode(p));
      const id = responseId('cmpl');
      const created = Math.floor(Date.now() / 1000);
      const head = { id, object: 'text_completion', created, model: body.model };
      const echoed = (index: number) => (echo ? promptTexts[Math.floor(index / n)]! : '');
      const sentEcho = new Set<number>();
      const choiceOut = (index: number, text: string, scored: TokenChoice[], finish: string | null) => ({
        index,
        text,
        logprobs: wantLogprobs === null ? null : completionLogprobs(ctx, scored, 0),
        finish_reason: finish,
      });
      return await respond(
        ctx,
        reply,
        { prompts, n, maxTokens, sampling: samplingParams(body, wantLogprobs), stops: stopStrings(body), lease },
        {
          stream: body.stream === true,
          includeUsage: body.stream_options?.include_usage === true,
          promptTokens: prompts.reduce((s, p) => s + p.length, 0),
          chunk: (index, text, scored, finish) => {
            // With echo, the prompt leads the first chunk of each choice.
            const lead = sentEcho.has(index) ? '' : echoed(index);
            sentEcho.add(index);
            return { ...head, choices: [choiceOut(index, lead + text, scored, finish)] };
          },
          usageChunk: (usage) => ({ ...head, choices: [], usage }),
          body: (choices: ChoiceText[], usage) => ({
            ...head,
            choices: choices.map((c, index) => ({
              ...choiceOut(index, echoed(index) + c.text, c.scored, c.finishReason),
            })),
            usage,
          }),
        },
      );
    });
  });
}
