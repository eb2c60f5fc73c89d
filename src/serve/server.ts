// `mixlora serve`: the OpenAI routes and /metrics over the shared HTTP stack (http.ts: limits, the API key
// check, OpenAI-style error bodies, /health), the engine and the registry of models, and a shutdown that
// drains running requests.
import type { FastifyInstance } from 'fastify';
import type { CausalLM } from '../models/causal-lm.js';
import type { TextTokenizer } from '../tokenizer/tokenizer.js';
import type { ServeContext } from './context.js';
import { DEFAULT_PREFILL_CHUNK, Engine } from './engine.js';
import { BLOCK_SIZE, blockBytes, blocksFor, kvBlocks } from './block-pool.js';
import { ServerMetrics } from './metrics.js';
import { ModelRegistry } from './registry.js';
import { DEFAULT_LIMITS, DEFAULT_MAX_LOADED_ADAPTERS, type ConnectionLimits } from './limits.js';
import { createHttpApp } from './http.js';
import { chatRoutes } from './routes/chat.js';
import { completionRoutes } from './routes/completions.js';
import { modelRoutes } from './routes/models.js';
import { releaseGrammarVocabularies } from './structured/index.js';
import { UserError } from '../util/errors.js';
import fs from 'node:fs';

export interface ServerOptions {
  model: CausalLM;
  tokenizer: TextTokenizer;
  /** The base model's name in /v1/models and the `model` field. */
  modelName: string;
  modelSource: string;
  /** Adapters to load before serving: name -> folder. */
  adapters: [string, string][];
  adapterRoot: string | null;
  /** Run-time adapters in memory at most (those in `adapters` are pinned and not counted). */
  maxLoadedAdapters?: number;
  maxBatch: number;
  maxQueue: number;
  /** The KV cache's memory in MiB (null: block-pool.ts kvBlocks' default). */
  kvCacheMib?: number | null;
  /** Automatic prefix caching (default on). */
  prefixCache?: boolean;
  /** Prompts longer than this are prefilled in chunks between decode steps (default 512). */
  prefillChunk?: number;
  apiKey: string | null;
  /** Largest request body in bytes. */
  bodyLimit: number;
  /** Connection limits and timeouts (DEFAULT_LIMITS where absent). */
  limits?: Partial<ConnectionLimits>;
  log?: (line: string) => void;
}

export interface Server {
  app: FastifyInstance;
  ctx: ServeContext;
  /** Stops accepting, lets running requests finish for up to deadlineMs, then closes everything. */
  shutdown(deadlineMs: number): Promise<void>;
}

/** The engine and the models of a server (no HTTP): what the routes answer from. */
export interface ServeCore {
  ctx: ServeContext;
  /** Lets running sequences finish for up to deadlineMs, then stops the engine and frees the adapters. */
  shutdown(deadlineMs: number): Promise<void>;
}

/** Loads the adapters and starts the engine over `o.model` (the model itself stays the caller's). */
export async function createServeCore(
  o: Omit<ServerOptions, 'apiKey' | 'bodyLimit' | 'limits'> & { idleTimeoutMs?: number },
): Promise<ServeCore> {
  const metrics = new ServerMetrics();
  if (o.adapterRoot !== null && !fs.statSync(o.adapterRoot, { throwIfNoEntry: false })?.isDirectory())
    throw new UserError(`--adapter-root ${o.adapterRoot}: no such folder`);
  const registry = new ModelRegistry(o.model, o.modelName, {
    adapterRoot: o.adapterRoot === null ? null : fs.realpathSync(o.adapterRoot),
    maxLoaded: o.maxLoadedAdapters ?? DEFAULT_MAX_LOADED_ADAPTERS,
    metrics,
  });
  try {
    for (const [name, dir] of o.adapters) await registry.addFromCli(name, dir);
  } catch (e) {
    registry.dispose();
    throw e;
  }
  const stopIds = o.model.config.eosTokenIds;
  // By default --max-batch full contexts; at least one.
  const context = blocksFor(o.model.config.maxPositionEmbeddings + 1);
  const kv = kvBlocks(o.model.config, o.model.dtype, {
    mib: o.kvCacheMib ?? null,
    wanted: o.maxBatch * context,
    minimum: context,
  });
  if (kv.blocks < kv.minimum) {
    registry.dispose();
    throw new UserError(
      `--kv-cache-mib ${o.kvCacheMib}: the KV cache must hold one full context (${o.model.config.maxPositionEmbeddings} positions: ` +
        `${Math.ceil((kv.minimum * blockBytes(o.model.config, o.model.dtype)) / 2 ** 20)} MiB at least)`,
    );
  }
  o.log?.(
    `KV cache: ${kv.blocks} blocks of ${BLOCK_SIZE} positions (${Math.round(kv.bytes / 2 ** 20)} MiB at most, used as sequences need it)` +
      (o.prefixCache === false ? ', prefix caching off' : ', prefix caching on'),
  );
  const engine = new Engine(o.model, {
    maxBatch: o.maxBatch,
    maxQueue: o.maxQueue,
    stopIds,
    metrics,
    kvBlocks: kv.blocks,
    prefixCache: o.prefixCache ?? true,
    prefillChunk: o.prefillChunk ?? DEFAULT_PREFILL_CHUNK,
  });
  const ctx: ServeContext = {
    model: o.model,
    tokenizer: o.tokenizer,
    engine,
    registry,
    metrics,
    stopIds,
    idleTimeoutMs: o.idleTimeoutMs ?? DEFAULT_LIMITS.idleTimeoutMs,
  };
  return {
    ctx,
    async shutdown(deadlineMs: number) {
      await engine.shutdown(deadlineMs);
      // This server's grammar vocabularies (structured output); other servers in the process keep theirs.
      await releaseGrammarVocabularies(o.tokenizer);
      registry.dispose();
    },
  };
}

/** The OpenAI routes (/v1/models, /v1/completions, /v1/chat/completions, adapters) and /metrics. */
export function openAiRoutes(app: FastifyInstance, ctx: ServeContext): void {
  app.get('/metrics', async (_req, reply) => {
    reply.header('content-type', ctx.metrics.registry.contentType);
    return ctx.metrics.registry.metrics();
  });
  modelRoutes(app, ctx);
  completionRoutes(app, ctx);
  chatRoutes(app, ctx);
}

/** Builds the server and loads its adapters (the port is not open yet: call app.listen). */
export async function createServer(o: ServerOptions): Promise<Server> {
  const { app, limits } = createHttpApp({
    apiKey: o.apiKey,
    bodyLimit: o.bodyLimit,
    ...(o.limits ? { limits: o.limits } : {}),
    ...(o.log ? { log: o.log } : {}),
  });
  let core: ServeCore;
  try {
    core = await createServeCore({ ...o, idleTimeoutMs: limits.idleTimeoutMs });
  } catch (e) {
    await app.close();
    throw e;
  }
  openAiRoutes(app, core.ctx);

  let closing: Promise<void> | null = null;
  return {
    app,
    ctx: core.ctx,
    shutdown(deadlineMs: number): Promise<void> {
      closing ??= (async () => {
        // Stop taking connections while running requests finish (engine first: new work gets 503).
        const drained = core.shutdown(deadlineMs);
        const closed = app.close();
        await drained;
        await closed;
      })();
      return closing;
    },
  };
}
