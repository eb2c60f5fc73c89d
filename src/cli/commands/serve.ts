// mixlora serve: an OpenAI-compatible HTTP server for the base model and any number of adapters over it.
import path from 'node:path';
import { Command } from 'commander';
import { UsageError } from '../../util/errors.js';
import {
  addConnectionLimitOptions,
  addModelOptions,
  checkConnectionLimits,
  intArg,
  openModel,
  type ModelCliOptions,
} from '../options.js';
import {
  DEFAULT_KV_SHARE,
  DEFAULT_LIMITS,
  DEFAULT_MAX_LOADED_ADAPTERS,
  DEFAULT_PREFILL_CHUNK,
} from '../../serve/limits.js';

interface ServeCliOptions extends ModelCliOptions {
  adapter: [string, string][];
  adapterRoot?: string;
  host: string;
  port: number;
  modelName?: string;
  maxBatch: number;
  maxQueue: number;
  apiKey?: string;
  bodyLimit: number;
  shutdownTimeout: number;
  maxLoadedAdapters: number;
  kvCacheMib?: number;
  prefixCache: boolean;
  prefillChunk: number;
  headersTimeout: number;
  requestTimeout: number;
  keepAliveTimeout: number;
  idleTimeout: number;
  maxConnections: number;
  maxConnectionsPerClient: number;
}

function adapterArg(v: string, prev: [string, string][] = []): [string, string][] {
  const eq = v.indexOf('=');
  if (eq <= 0 || eq === v.length - 1) throw new UsageError(`--adapter takes NAME=DIR, got '${v}'`);
  return [...prev, [v.slice(0, eq), v.slice(eq + 1)]];
}

export function serveCommand(): Command {
  const cmd = new Command('serve')
    .description('serve the model and its adapters over an OpenAI-compatible HTTP API (the model field picks one)')
    .option('--adapter <name=dir>', 'serve the adapter in DIR under NAME; repeat for more', adapterArg, [])
    .option(
      '--adapter-root <dir>',
      'allow loading adapters from folders inside DIR at run time (POST /v1/adapters, /v1/load_lora_adapter, or a request naming a folder of DIR as its model)',
    )
    .option(
      '--max-loaded-adapters <n>',
      'adapters loaded at run time kept in memory at most; past it the least recently used idle one is unloaded (loaded again when asked for); --adapter ones are always kept',
      intArg('--max-loaded-adapters', 1),
      DEFAULT_MAX_LOADED_ADAPTERS,
    )
    .option('--host <host>', 'address to listen on', '127.0.0.1')
    .option('--port <n>', 'port to listen on (0: any free port)', intArg('--port', 0, 65535), 8000)
    .option('--model-name <name>', "the base model's name in the API (default: the model folder's name)")
    .option('--max-batch <n>', 'sequences decoded together at most', intArg('--max-batch', 1, 1024), 16)
    .option('--max-queue <n>', 'sequences waiting for the batch at most (then 429)', intArg('--max-queue', 0), 256)
    .option('--api-key <key>', 'require Authorization: Bearer KEY on every route but /health (or MIXLORA_API_KEY)')
    .option('--body-limit <bytes>', 'largest request body (then 413)', intArg('--body-limit', 1024), 1 << 20)
    .option(
      '--kv-cache-mib <n>',
      `memory of the paged KV cache in MiB (default: --max-batch full contexts, at most ${DEFAULT_KV_SHARE * 100}% of the available memory; at least one full context)`,
      intArg('--kv-cache-mib', 1),
    )
    .option('--no-prefix-cache', 'do not keep and reuse the KV blocks of prompt prefixes already computed')
    .option(
      '--prefill-chunk <n>',
      'prompts longer than this many tokens are prefilled in chunks between decode steps',
      intArg('--prefill-chunk', 16),
      DEFAULT_PREFILL_CHUNK,
    )
    .option(
      '--headers-timeout <s>',
      "seconds a client gets to send a request's headers",
      intArg('--headers-timeout', 1),
      DEFAULT_LIMITS.headersTimeoutMs / 1000,
    )
    .option(
      '--request-timeout <s>',
      'seconds a client gets to send a whole request (headers and body)',
      intArg('--request-timeout', 1),
      DEFAULT_LIMITS.requestTimeoutMs / 1000,
    )
    .option(
      '--keep-alive-timeout <s>',
      'seconds an idle keep-alive connection stays open',
      intArg('--keep-alive-timeout', 1),
      DEFAULT_LIMITS.keepAliveTimeoutMs / 1000,
    )
    .option(
      '--idle-timeout <s>',
      'seconds a connection may pass with no traffic (a client that stopped reading its stream)',
      intArg('--idle-timeout', 1),
      DEFAULT_LIMITS.idleTimeoutMs / 1000,
    )
    .option(
      '--shutdown-timeout <s>',
      'on SIGTERM, seconds running requests get to finish',
      intArg('--shutdown-timeout', 0),
      30,
    );
  addConnectionLimitOptions(cmd);
  addModelOptions(cmd);
  return cmd.action(async (o: ServeCliOptions) => {
    const { createServer } = await import('../../serve/server.js');
    const { checkModelName } = await import('../../serve/registry.js');
    const log = (line: string) => process.stderr.write(`mixlora serve: ${line}\n`);
    if (o.apiKey === '')
      throw new UsageError('--api-key is empty: give a key, or leave the option out to serve without one');
    checkConnectionLimits(o);
    const modelName = o.modelName ?? path.basename(path.resolve(o.model)).replace(/\.bin$/, '');
    checkModelName(modelName, '--model-name');
    const loaded = await openModel(o);
    log(
      `loaded ${o.model} (${loaded.model.config.numLayers} layers, context ${loaded.model.config.maxPositionEmbeddings})`,
    );
    const server = await createServer({
      model: loaded.model,
      tokenizer: loaded.tokenizer,
      modelName,
      modelSource: path.resolve(o.model),
      adapters: o.adapter,
      adapterRoot: o.adapterRoot ? path.resolve(o.adapterRoot) : null,
      maxLoadedAdapters: o.maxLoadedAdapters,
      kvCacheMib: o.kvCacheMib ?? null,
      prefixCache: o.prefixCache,
      prefillChunk: o.prefillChunk,
      maxBatch: o.maxBatch,
      maxQueue: o.maxQueue,
      // An empty MIXLORA_API_KEY is an unset one (an empty --api-key is refused above).
      apiKey: o.apiKey ?? (process.env.MIXLORA_API_KEY || null),
      bodyLimit: o.bodyLimit,
      limits: {
        headersTimeoutMs: o.headersTimeout * 1000,
        requestTimeoutMs: o.requestTimeout * 1000,
        keepAliveTimeoutMs: o.keepAliveTimeout * 1000,
        idleTimeoutMs: o.idleTimeout * 1000,
        maxConnections: o.maxConnections,
        maxConnectionsPerClient: o.maxConnectionsPerClient,
      },
      log,
    });
    const names = server.ctx.registry.list().map((m) => m.name);
    const address = await server.app.listen({ host: o.host, port: o.port });
    log(`ready: listening on ${address} (models: ${names.join(', ')})`);
    await new Promise<void>((resolve) => {
      let stopping = false;
      const stop = (signal: string) => {
        // A second signal while draining: said once, the drain goes on (its deadline still holds).
        if (stopping) return log(`${signal}: already stopping (at most ${o.shutdownTimeout} s)`);
        stopping = true;
        log(`${signal}: no new requests; finishing running ones (at most ${o.shutdownTimeout} s)`);
        server
          .shutdown(o.shutdownTimeout * 1000)
          .then(() => {
            loaded.model.dispose();
            log('stopped');
            resolve();
          })
          .catch((e: Error) => {
            log(`shutdown failed: ${e.message}`);
            process.exitCode = 1;
            resolve();
          });
      };
      process.on('SIGTERM', () => stop('SIGTERM'));
      process.on('SIGINT', () => stop('SIGINT'));
    });
  });
}
