// POST /v1/completions (OpenAI's legacy completions: a prompt in, text out). With `echo` the prompt leads
// the text, and with `logprobs` too its tokens lead the log-probabilities (the first one null), as OpenAI
// and vLLM return them: lm-evaluation-harness scores a continuation from exactly these.
import type { FastifyInstance } from 'fastify';
import type { ServeContext } from '../context.js';
import type { ChoiceText } from '../choice.js';
import type { TokenChoice } from '../sampling.js';
import type { PromptScore } from '../prompt-scores.js';
import { badRequest } from '../errors.js';
import { completionBody, type CompletionRequest } from '../schemas.js';
import {
  checkContext,
  checkPromptIds,
  promptTooLong,
  responseConstraint,
  samplingParams,
  stopStrings,
} from '../request.js';
import { respond, responseId, withModel } from '../respond.js';
import { TokenPieces } from '../token-pieces.js';

/** Token ids of each prompt: strings through the tokenizer (BOS as its config says), ids as given. */
function promptIds(ctx: ServeContext, prompt: CompletionRequest['prompt']): number[][] {
  const encode = (text: string, i: number | null) => {
    promptTooLong(ctx, text, i === null ? 'prompt' : `prompt[${i}]`);
    return ctx.tokenizer.encode(text);
  };
  if (typeof prompt === 'string') return [encode(prompt, null)];
  if (prompt.every((p) => typeof p === 'number')) return [prompt as number[]];
  return (prompt as (string | number[])[]).map((p, i) => (typeof p === 'string' ? encode(p, i) : p));
}

interface CompletionLogprobs {
  tokens: string[];
  token_logprobs: (number | null)[];
  top_logprobs: (Record<string, number> | null)[];
  text_offset: number[];
}

/** One choice's logprobs as it streams: tokens turned into entries with offsets into the choice's text. */
class LogprobsWriter {
  private offset = 0;

  constructor(private readonly pieces: TokenPieces) {}

  /** Entries for these tokens (prompt scores or generated choices), continuing the text offsets. */
  write(tokens: (PromptScore | TokenChoice)[]): CompletionLogprobs {
    const out: CompletionLogprobs = { tokens: [], token_logprobs: [], top_logprobs: [], text_offset: [] };
    for (const t of tokens) {
      const { piece, alternatives } = this.pieces.next(
        t.id,
        (t.top ?? []).map(([id]) => id),
      );
      out.tokens.push(this.pieces.label(t.id, piece));
      out.text_offset.push(this.offset);
      this.offset += piece.length;
      out.token_logprobs.push(t.logprob ?? null);
      out.top_logprobs.push(
        t.top == null ? null : Object.fromEntries(t.top.map(([, lp], i) => [alternatives[i]!, lp])),
      );
    }
    return out;
  }
}

function joined(parts: CompletionLogprobs[]): CompletionLogprobs {
  return {
    tokens: parts.flatMap((p) => p.tokens),
    token_logprobs: parts.flatMap((p) => p.token_logprobs),
    top_logprobs: parts.flatMap((p) => p.top_logprobs),
    text_offset: parts.flatMap((p) => p.text_offset),
  };
}

export function completionRoutes(app: FastifyInstance, ctx: ServeContext): void {
  app.post('/v1/completions', { schema: { body: completionBody } }, async (req, reply) => {
    const body = req.body as CompletionRequest;
    return withModel(ctx, body.model, async (lease) => {
      const echo = body.echo === true;
      const maxTokens = body.max_tokens ?? 16; // OpenAI's default for completions
      if (maxTokens === 0 && !echo)
        throw badRequest('max_tokens 0 generates nothing; it scores the prompt with echo: true', 'max_tokens');
      const prompts = promptIds(ctx, body.prompt);
      checkPromptIds(ctx, prompts, 'prompt');
      checkContext(ctx, prompts, maxTokens, 'max_tokens');
      const n = body.n ?? 1;
      const wantLogprobs = body.logprobs ?? null;
      const sampling = samplingParams(ctx, body, wantLogprobs);
      const constraint = await responseConstraint(ctx, body);
      const promptTexts = prompts.map((p) => ctx.tokenizer.decode(p));
      const id = responseId('cmpl');
      const created = Math.floor(Date.now() / 1000);
      const head = { id, object: 'text_completion', created, model: body.model };
      const promptOf = (index: number) => Math.floor(index / n);
      // Each choice's log-probability entries: the echoed prompt's tokens first (decoded from the start),
      // then the generated ones (after the prompt's tokens).
      const writers = new Map<number, LogprobsWriter>();
      const writer = (index: number) => {
        let w = writers.get(index);
        if (!w) {
          const ids = prompts[promptOf(index)]!;
          w = new LogprobsWriter(new TokenPieces(ctx.tokenizer, echo ? [] : ids));
          writers.set(index, w);
        }
        return w;
      };
      const sentEcho = new Set<number>();
      const choiceOut = (index: number, text: string, logprobs: CompletionLogprobs | null, finish: string | null) => ({
        index,
        text,
        logprobs,
        finish_reason: finish,
      });
      return await respond(
        ctx,
        reply,
        {
          prompts,
          n,
          maxTokens,
          sampling,
          stops: stopStrings(body),
          lease,
          promptLogprobs: echo && wantLogprobs !== null ? wantLogprobs : null,
          constraint,
        },
        {
          stream: body.stream === true,
          includeUsage: body.stream_options?.include_usage === true,
          promptTokens: prompts.reduce((s, p) => s + p.length, 0),
          chunk: (index, text, scored, finish, choice) => {
            // With echo, the prompt (and its log-probabilities) lead the first chunk of each choice.
            const first = !sentEcho.has(index);
            sentEcho.add(index);
            const parts: CompletionLogprobs[] = [];
            if (wantLogprobs !== null) {
              if (first && echo) parts.push(writer(index).write(choice.promptScores ?? []));
              parts.push(writer(index).write(scored));
            }
            const lead = first && echo ? promptTexts[promptOf(index)]! : '';
            return { ...head, choices: [choiceOut(index, lead + text, parts.length ? joined(parts) : null, finish)] };
          },
          usageChunk: (usage) => ({ ...head, choices: [], usage }),
          body: (choices: ChoiceText[], usage) => ({
            ...head,
            choices: choices.map((c, index) => {
              let logprobs: CompletionLogprobs | null = null;
              if (wantLogprobs !== null) {
                const parts = echo ? [writer(index).write(c.promptScores ?? [])] : [];
                logprobs = joined([...parts, writer(index).write(c.scored)]);
              }
              const lead = echo ? promptTexts[promptOf(index)]! : '';
              return choiceOut(index, lead + c.text, logprobs, c.finishReason);
            }),
            usage,
          }),
        },
      );
    });
  });
}
