// POST /v1/chat/completions: messages rendered with the tokenizer's chat template (as transformers'
// apply_chat_template with add_generation_prompt), the assistant's reply out.
import type { FastifyInstance } from 'fastify';
import type { ServeContext } from '../context.js';
import type { ChoiceText } from '../choice.js';
import type { TokenChoice } from '../sampling.js';
import { badRequest } from '../errors.js';
import { chatBody, type ChatRequest } from '../schemas.js';
import {
  checkContext,
  checkPromptIds,
  promptTooLong,
  responseConstraint,
  samplingParams,
  stopStrings,
} from '../request.js';
import { respond, responseId, withModel } from '../respond.js';

async function chatPrompt(ctx: ServeContext, body: ChatRequest): Promise<number[]> {
  const tok = ctx.tokenizer;
  if (!tok.hasChatTemplate)
    throw badRequest(
      "this model's tokenizer has no chat template (tokenizer_config.json chat_template); use /v1/completions",
      'messages',
      'no_chat_template',
    );
  const messages = body.messages.map((m) => ({
    role: m.role,
    content: typeof m.content === 'string' ? m.content : (m.content ?? []).map((p) => p.text).join(''),
  }));
  promptTooLong(ctx, messages.map((m) => m.content).join(''), 'messages');
  let text: string;
  try {
    // Rendered by a separate process: a hostile template cannot block or crash the server.
    text = await tok.applyChatTemplateAsync(messages, { addGenerationPrompt: true });
  } catch (e) {
    throw badRequest(`the chat template refused these messages: ${(e as Error).message}`, 'messages');
  }
  // The template writes its own special tokens (as `generate --chat` does).
  return tok.encode(text, { special: false });
}

function chatLogprobs(ctx: ServeContext, scored: TokenChoice[]) {
  const entry = (id: number, logprob: number) => {
    const token = ctx.tokenizer.decode([id], { skipSpecial: false });
    return { token, logprob, bytes: [...Buffer.from(token, 'utf8')] };
  };
  return {
    content: scored.map((s) => ({
      ...entry(s.id, s.logprob!),
      top_logprobs: (s.top ?? []).map(([id, lp]) => entry(id, lp)),
    })),
  };
}

export function chatRoutes(app: FastifyInstance, ctx: ServeContext): void {
  app.post('/v1/chat/completions', { schema: { body: chatBody } }, async (req, reply) => {
    const body = req.body as ChatRequest;
    return withModel(ctx, body.model, async (lease) => {
      const prompt = await chatPrompt(ctx, body);
      checkPromptIds(ctx, [prompt], 'messages');
      const limit = ctx.model.config.maxPositionEmbeddings;
      const asked = body.max_completion_tokens ?? body.max_tokens ?? null;
      // Without a limit the reply may fill the context, as OpenAI's chat API does.
      const maxTokens = asked ?? Math.max(1, limit - prompt.length);
      checkContext(
        ctx,
        [prompt],
        maxTokens,
        body.max_completion_tokens != null ? 'max_completion_tokens' : 'max_tokens',
      );
      const n = body.n ?? 1;
      const wantLogprobs = body.logprobs === true ? (body.top_logprobs ?? 0) : null;
      const sampling = samplingParams(ctx, body, wantLogprobs);
      const constraint = await responseConstraint(ctx, body);
      const id = responseId('chatcmpl');
      const created = Math.floor(Date.now() / 1000);
      const head = { id, created, model: body.model };
      const chunkHead = { ...head, object: 'chat.completion.chunk' };
      return await respond(
        ctx,
        reply,
        {
          prompts: [prompt],
          n,
          maxTokens,
          sampling,
          stops: stopStrings(body),
          lease,
          constraint,
        },
        {
          stream: body.stream === true,
          includeUsage: body.stream_options?.include_usage === true,
          promptTokens: prompt.length,
          opening: (index) => ({
            ...chunkHead,
            choices: [{ index, delta: { role: 'assistant', content: '' }, logprobs: null, finish_reason: null }],
          }),
          chunk: (index, text, scored, finish) => ({
            ...chunkHead,
            choices: [
              {
                index,
                delta: text === '' && finish !== null ? {} : { content: text },
                logprobs: wantLogprobs === null ? null : chatLogprobs(ctx, scored),
                finish_reason: finish,
              },
            ],
          }),
          usageChunk: (usage) => ({ ...chunkHead, choices: [], usage }),
          body: (choices: ChoiceText[], usage) => ({
            ...head,
            object: 'chat.completion',
            choices: choices.map((c, index) => ({
              index,
              message: { role: 'assistant', content: c.text },
              logprobs: wantLogprobs === null ? null : chatLogprobs(ctx, c.scored),
              finish_reason: c.finishReason,
            })),
            usage,
          }),
        },
      );
    });
  });
}
