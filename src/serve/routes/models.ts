// GET /v1/models, and loading/unloading adapters at run time: POST /v1/adapters and
// DELETE /v1/adapters/NAME, and vLLM's POST /v1/load_lora_adapter and /v1/unload_lora_adapter (same
// rules: folders inside --adapter-root, the API key).
import type { FastifyInstance } from 'fastify';
import type { ServeContext } from '../context.js';
import type { ServedModel } from '../registry.js';
import { adapterBody, loadLoraBody, unloadLoraBody } from '../schemas.js';

/** A model as OpenAI lists it, with vLLM's `root` and `parent` (the base model's name for adapters). */
function modelObject(ctx: ServeContext, m: ServedModel) {
  return {
    id: m.name,
    object: 'model',
    created: m.created,
    owned_by: 'mixlora',
    root: m.root,
    parent: m.isBase ? null : ctx.registry.baseName,
    adapter_type: m.peftType,
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

  // vLLM answers these two with a line of text.
  app.post('/v1/load_lora_adapter', { schema: { body: loadLoraBody } }, async (req, reply) => {
    const body = req.body as { lora_name: string; lora_path: string; load_inplace?: boolean };
    await ctx.registry.load(body.lora_name, body.lora_path, { replace: body.load_inplace === true });
    reply.type('text/plain; charset=utf-8');
    return `Success: LoRA adapter '${body.lora_name}' added successfully.`;
  });

  app.post('/v1/unload_lora_adapter', { schema: { body: unloadLoraBody } }, async (req, reply) => {
    const body = req.body as { lora_name: string };
    ctx.registry.unload(body.lora_name);
    reply.type('text/plain; charset=utf-8');
    return `Success: LoRA adapter '${body.lora_name}' removed successfully.`;
  });
}
