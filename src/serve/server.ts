// The HTTP side: fastify with schema validation (no type coercion), a body limit, the API key check,
// OpenAI-style error bodies, /health and /metrics, and a shutdown that drains running requests.
import { timingSafeEqual, createHash } from 'node:crypto';
import Fastify, { type FastifyError, type FastifyInstance } from 'fastify';
import type { CausalLM } from '../models/llama.js';
import type { TextTokenizer } from '../tokenizer/tokenizer.js';
import type { ServeContext } from './context.js';
import { DEFAULT_PREFILL_CHUNK, Engine } from './engine.js';
import { BLOCK_SIZE, blockBytes, kvBlocks } from './block-pool.js';
import { ApiError, errorBody } from './errors.js';
import { ServerMetrics } from './metrics.js';
import { ModelRegistry } from './registry.js';
import { DEFAULT_LIMITS, DEFAULT_MAX_LOADED_ADAPTERS, type ConnectionLimits } from './limits.js';
import { chatRoutes } from './routes/chat.js';
import { completionRoutes } from './routes/completions.js';
import { modelRoutes } from './routes/models.js';
import { describeValidation } from './validation.js';
import { releaseGrammarVocabularies } from './structured/index.js';
import { CONNECTION_CHECK_MS, connectionsWithinFileLimit, limitConnections } from './connections.js';
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

/** Builds the server and loads its adapters (the port is not open yet: call app.listen). */
export async function createServer(o: ServerOptions): Promise<Server> {
  const metrics = new ServerMetrics();
  const limits: ConnectionLimits = { ...DEFAULT_LIMITS, ...o.limits };
  const connections = connectionsWithinFileLimit(limits.maxConnections);
  if (connections < limits.maxConnections) {
    o.log?.(
      `at most ${connections} connections: the open-file limit (ulimit -n) leaves no room for ${limits.maxConnections}`,
    );
    limits.maxConnections = connections;
  }
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
  const kv = kvBlocks(o.model.config, o.model.dtype, { mib: o.kvCacheMib ?? null, maxBatch: o.maxBatch });
  if (kv.blocks < kv.minimum)
    throw new UserError(
      `--kv-cache-mib ${o.kvCacheMib}: the KV cache must hold one full context (${o.model.config.maxPositionEmbeddings} positions: ` +
        `${Math.ceil((kv.minimum * blockBytes(o.model.config, o.model.dtype)) / 2 ** 20)} MiB at least)`,
    );
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
    idleTimeoutMs: limits.idleTimeoutMs,
  };

  const app = Fastify({
    bodyLimit: o.bodyLimit,
    // A wrong type is an error to report, not a value to convert; `verbose` keeps each failed
    // alternative's schema, so an error can say what a field may be.
    ajv: { customOptions: { coerceTypes: false, allErrors: false, verbose: true } },
    forceCloseConnections: 'idle',
    return503OnClosing: true,
    requestTimeout: limits.requestTimeoutMs,
    keepAliveTimeout: limits.keepAliveTimeoutMs,
    connectionTimeout: limits.idleTimeoutMs,
    http: { connectionsCheckingInterval: CONNECTION_CHECK_MS },
  });
  limitConnections(app, limits);

  const keyDigest = o.apiKey === null ? null : createHash('sha256').update(o.apiKey).digest();
  app.addHook('onRequest', async (req) => {
    if (keyDigest === null || req.url === '/health') return;
    // The scheme is case-insensitive (RFC 9110 §11.1).
    const given = /^bearer +(.+)$/i.exec(req.headers.authorization ?? '')?.[1] ?? null;
    // Digests compare in constant time whatever the lengths.
    if (given === null || !timingSafeEqual(createHash('sha256').update(given).digest(), keyDigest))
      throw new ApiError(
        401,
        given === null ? 'missing API key (Authorization: Bearer KEY)' : 'incorrect API key',
        'authentication_error',
        null,
        'invalid_api_key',
      );
  });

  app.setErrorHandler((err: FastifyError | ApiError, _req, reply) => {
    if (err instanceof ApiError) return reply.code(err.status).headers(err.headers).send(err.body);
    if (err.validation && err.validation.length > 0) {
      const { message, field } = describeValidation(err.validation);
      return reply.code(400).send(errorBody(message, 'invalid_request_error', field || null, 'invalid_value'));
    }
    if (err.code === 'FST_ERR_CTP_BODY_TOO_LARGE')
      return reply
        .code(413)
        .send(
          errorBody(
            `request body is larger than ${o.bodyLimit} bytes`,
            'invalid_request_error',
            null,
            'body_too_large',
          ),
        );
    if (err.code === 'FST_ERR_CTP_INVALID_JSON_BODY' || err.code === 'FST_ERR_CTP_EMPTY_JSON_BODY')
      return reply
        .code(400)
        .send(
          errorBody(
            `the request body is not valid JSON (${err.message})`,
            'invalid_request_error',
            'body',
            'invalid_json',
          ),
        );
    const status = err.statusCode ?? 500;
    if (status >= 400 && status < 500)
      return reply.code(status).send(errorBody(err.message, 'invalid_request_error', null, err.code ?? null));
    o.log?.(`error: ${err.stack ?? err.message}`);
    return reply.code(500).send(errorBody(`internal error: ${err.message}`, 'server_error'));
  });
  app.setNotFoundHandler((req, reply) =>
    reply.code(404).send(errorBody(`no route ${req.method} ${req.url}`, 'not_found_error', null, 'unknown_route')),
  );

  app.get('/health', async () => ({ status: 'ok' }));
  app.get('/metrics', async (_req, reply) => {
    reply.header('content-type', metrics.registry.contentType);
    return metrics.registry.metrics();
  });
  modelRoutes(app, ctx);
  completionRoutes(app, ctx);
  chatRoutes(app, ctx);

  let closing: Promise<void> | null = null;
  return {
    app,
    ctx,
    shutdown(deadlineMs: number): Promise<void> {
      closing ??= (async () => {
        // Stop taking connections while running requests finish (engine first: new work gets 503).
        const drained = engine.shutdown(deadlineMs);
        const closed = app.close();
        await drained;
        // This server's grammar vocabularies (structured output); other servers in the process keep theirs.
        await releaseGrammarVocabularies(o.tokenizer);
        await closed;
        registry.dispose();
      })();
      return closing;
    },
  };
}
