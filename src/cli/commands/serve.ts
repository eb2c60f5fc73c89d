// mixlora serve: an OpenAI-compatible HTTP server for the base model and any number of adapters over it.
import path from 'node:path';
import { Command } from 'commander';
import { UsageError } from '../../util/errors.js';
import { addModelOptions, intArg, openModel, type ModelCliOptions } from '../options.js';

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
    .option('--adapter-root <dir>', 'allow POST /v1/adapters to load adapters from folders inside DIR')
    .option('--host <host>', 'address to listen on', '127.0.0.1')
    .option('--port <n>', 'port to listen on (0: any free port)', intArg('--port', 0, 65535), 8000)
    .option('--model-name <name>', "the base model's name in the API (default: the model folder's name)")
    .option('--max-batch <n>', 'sequences decoded together at most', intArg('--max-batch', 1, 1024), 16)
    .option('--max-queue <n>', 'sequences waiting for the batch at most (then 429)', intArg('--max-queue', 0), 256)
    .option('--api-key <key>', 'require Authorization: Bearer KEY on every route but /health (or MIXLORA_API_KEY)')
    .option('--body-limit <bytes>', 'largest request body (then 413)', intArg('--body-limit', 1024), 1 << 20)
    .option(
      '--shutdown-timeout <s>',
      'on SIGTERM, seconds running requests get to finish',
      intArg('--shutdown-timeout', 0),
      30,
    );
  addModelOptions(cmd);
  return cmd.action(async (o: ServeCliOptions) => {
    const { createServer } = await import('../../serve/server.js');
    const { checkModelName } = await import('../../serve/registry.js');
    const log = (line: string) => process.stderr.write(`mixlora serve: ${line}\n`);
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
      maxBatch: o.maxBatch,
      maxQueue: o.maxQueue,
      apiKey: o.apiKey ?? process.env.MIXLORA_API_KEY ?? null,
      bodyLimit: o.bodyLimit,
      log,
    });
    const names = server.ctx.registry.list().map((m) => m.name);
    const address = await server.app.listen({ host: o.host, port: o.port });
    log(`ready: listening on ${address} (models: ${names.join(', ')})`);
    await new Promise<void>((resolve) => {
      const stop = (signal: string) => {
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
      process.once('SIGTERM', () => stop('SIGTERM'));
      process.once('SIGINT', () => stop('SIGINT'));
    });
  });
}
