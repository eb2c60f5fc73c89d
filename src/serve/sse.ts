// Server-sent events as OpenAI streams them: `data: {json}` records, ending with `data: [DONE]`.
import type { FastifyReply } from 'fastify';

export class EventStream {
  constructor(private readonly reply: FastifyReply) {
    // The route writes the response itself from here on (fastify leaves the socket to us).
    reply.hijack();
    reply.raw.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-cache',
      connection: 'keep-alive',
    });
  }

  get closed(): boolean {
    return this.reply.raw.destroyed || this.reply.raw.writableEnded;
  }

  send(data: unknown): void {
    if (!this.closed) this.reply.raw.write(`data: ${JSON.stringify(data)}\n\n`);
  }

  end(): void {
    if (this.closed) return;
    this.reply.raw.write('data: [DONE]\n\n');
    this.reply.raw.end();
  }
}
