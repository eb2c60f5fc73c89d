// Runs a request's job to its end and answers: one JSON body, or a stream of chunks. The lease on the
// model is held until the last token, and a client that goes away cancels its sequences.
import { randomUUID } from 'node:crypto';
import type { FastifyReply } from 'fastify';
import type { ServeContext } from './context.js';
import { ApiError, errorBody } from './errors.js';
import { Job, type JobSpec } from './job.js';
import type { Lease } from './registry.js';
import type { ChoiceText } from './choice.js';
import type { TokenChoice } from './sampling.js';
import { EventStream } from './sse.js';

export interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
}

export interface ResponseShape {
  stream: boolean;
  includeUsage: boolean;
  promptTokens: number;
  /** A stream chunk for choice `index` (finish set on its last chunk). */
  chunk(
    index: number,
    text: string,
    scored: TokenChoice[],
    finish: string | null,
    choice: ChoiceText,
  ): Record<string, unknown>;
  /** A chunk sent first for each choice (chat's assistant role), if any. */
  opening?(index: number): Record<string, unknown>;
  /** The chunk that carries usage at the end of a stream (choices: []). */
  usageChunk(usage: Usage): Record<string, unknown>;
  /** The whole response when not streaming. */
  body(choices: ChoiceText[], usage: Usage): Record<string, unknown>;
}

export function responseId(prefix: string): string {
  return `${prefix}-${randomUUID().replaceAll('-', '')}`;
}

export async function respond(
  ctx: ServeContext,
  reply: FastifyReply,
  spec: JobSpec,
  shape: ResponseShape,
): Promise<unknown> {
  const gone = () => {
    spec.lease.clientGone = true;
  };
  const usageOf = (job: Job): Usage => ({
    prompt_tokens: shape.promptTokens,
    completion_tokens: job.completionTokens,
    total_tokens: shape.promptTokens + job.completionTokens,
  });
  if (!shape.stream) {
    const job = new Job(ctx.engine, ctx.tokenizer, ctx.stopIds, spec);
    const onClose = () => {
      if (!reply.raw.writableEnded) {
        gone();
        job.cancel();
      }
    };
    reply.raw.on('close', onClose);
    // The client waits for the whole answer with nothing on the wire: not idle, however long it takes.
    const socket = reply.raw.socket;
    socket?.setTimeout(0);
    try {
      await job.done;
    } finally {
      reply.raw.off('close', onClose);
      if (socket && !socket.destroyed) socket.setTimeout(ctx.idleTimeoutMs);
    }
    const failed = job.choices.find((c) => c.error);
    if (failed) throw new ApiError(500, `generation failed: ${failed.error!.message}`, 'server_error');
    return shape.body(job.choices, usageOf(job));
  }
  let stream: EventStream | null = null;
  const job = new Job(ctx.engine, ctx.tokenizer, ctx.stopIds, spec, {
    onProgress: (i) => {
      const c = job.choices[i]!;
      const text = c.takeDelta();
      const scored = c.takeScored();
      if (text !== '' || scored.length > 0) stream?.send(shape.chunk(i, text, scored, null, c));
    },
    onChoiceEnd: (i) => {
      const c = job.choices[i]!;
      stream?.send(shape.chunk(i, c.takeDelta(), c.takeScored(), c.finishReason, c));
    },
  });
  stream = new EventStream(reply);
  if (shape.opening) job.choices.forEach((_, i) => stream!.send(shape.opening!(i)));
  reply.raw.on('close', () => {
    if (!reply.raw.writableEnded) {
      gone();
      job.cancel();
    }
  });
  await job.done;
  const failed = job.choices.find((c) => c.error);
  if (failed) stream.send(errorBody(`generation failed: ${failed.error!.message}`, 'server_error'));
  if (shape.includeUsage) stream.send(shape.usageChunk(usageOf(job)));
  stream.end();
  return reply;
}

/** Runs a generation route under a lease on its model, and counts the request by model and status
 * (499 when the client went away; unknown model names are counted as '' to bound the labels). */
export async function withModel<T>(
  ctx: ServeContext,
  name: string,
  fn: (lease: Lease & { clientGone?: boolean }) => Promise<T>,
): Promise<T> {
  let label = '';
  let status = 200;
  let lease: (Lease & { clientGone?: boolean }) | null = null;
  try {
    lease = await ctx.registry.acquire(name);
    label = lease.model.name;
    const out = await fn(lease);
    if (lease.clientGone) status = 499;
    return out;
  } catch (e) {
    status = e instanceof ApiError ? e.status : 500;
    throw e;
  } finally {
    ctx.metrics.requests.inc({ model: label, status: String(status) });
    lease?.release();
  }
}
