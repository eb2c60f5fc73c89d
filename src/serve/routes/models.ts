// GET /v1/models, and loading/unloading adapters at run time (POST /v1/adapters, DELETE /v1/adapters/NAME).
import type { FastifyInstance } from 'fastify';
import type { ServeContext } from '../context.js';
import type { ServedModel } from '../registry.js';
import { adapterBody } from '../schemas.js';

function modelObject(ctx: ServeContext, m: ServedModel) {
  return {
    id: m.name,
    object: 'model',
    created: m.created,
    owned_by: 'mixlora',
    root: m.adapter ? m.source : ctx.registry.baseName,
    parent: m.adapter ? ctx.registry.baseName : null,
    adapter_type: m.adapter ? m.adapter.config.peftType : null,
    max_model_len: ctx.model.config.maxPositionEmbeddings,
  };
}

export function modelRoutes(app: FastifyInstance, ctx: ServeContext): void {
  app.get('/v1/models', async () => ({
    object: 'list',
    data: ctx.registry.list().map((m) => modelObject(ctx, m)),
  }));

  app.post('/v1/adapters', { schema: { body: adapterBody } }, async (req, reply) => {
    const { name, path } = req.body as { name: string; path: string };
    const m = await ctx.registry.load(name, path);
    reply.code(201);
    return modelObject(ctx, m);
  });

  app.delete('/v1/adapters/:name', async (req) => {
    const { name } = req.params as { name: string };
    ctx.registry.unload(name);
    return { id: name, object: 'model', deleted: true };
  });
}
