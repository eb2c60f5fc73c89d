// mixlora studio: a web UI over a runs folder (train, watch, evaluate, compare and chat, export), served
// on the HTTP stack of `mixlora serve`.
import path from 'node:path';
import fs from 'node:fs';
import { Command } from 'commander';
import { UsageError } from '../../util/errors.js';
import { addConnectionLimitOptions, checkConnectionLimits, intArg } from '../options.js';

interface StudioCliOptions {
  runs: string;
  folder: string[];
  host: string;
  port: number;
  apiKey?: string;
  bodyLimit: number;
  maxConnections: number;
  maxConnectionsPerClient: number;
  threads?: number;
}

const collect = (v: string, prev: string[] = []) => [...prev, v];

export function studioCommand(): Command {
  const cmd = new Command('studio')
    .description(
      'a web UI: runs and their live curves, expert load, a new-run form, evaluation, chat with adapters side by side, export',
    )
    .option('--runs <dir>', 'the runs folder: runs are listed, started and written here (made if missing)', 'runs')
    .option(
      '--folder <dir>',
      'another folder the studio may read (models, data); repeat for more (the bundled model and data are always readable)',
      collect,
      [],
    )
    .option('--host <host>', 'address to listen on', '127.0.0.1')
    .option('--port <n>', 'port to listen on (0: any free port)', intArg('--port', 0, 65535), 8765)
    .option(
      '--api-key <key>',
      'require this key on every route but /health (or MIXLORA_API_KEY); a browser asks for it once',
    )
    .option('--body-limit <bytes>', 'largest request body (then 413)', intArg('--body-limit', 1024), 1 << 20);
  return addConnectionLimitOptions(cmd)
    .option('--threads <n>', 'CPU threads of the chat model in this process', intArg('--threads', 1))
    .action(async (o: StudioCliOptions) => {
      const log = (line: string) => process.stderr.write(`mixlora studio: ${line}\n`);
      if (o.apiKey === '')
        throw new UsageError('--api-key is empty: give a key, or leave the option out to run without one');
      checkConnectionLimits(o);
      const { UserError } = await import('../../util/errors.js');
      for (const f of o.folder)
        if (!fs.statSync(f, { throwIfNoEntry: false })?.isDirectory())
          throw new UserError(`--folder ${f}: no such folder`);
      if (fs.existsSync(o.runs) && !fs.statSync(o.runs).isDirectory())
        throw new UserError(`--runs ${o.runs}: exists and is not a folder`);
      if (o.threads !== undefined) (await import('../../tensor/runtime.js')).setNumThreads(o.threads);
      const { createStudio } = await import('../../studio/server.js');
      const studio = await createStudio({
        runsDir: path.resolve(o.runs),
        folders: o.folder.map((f) => path.resolve(f)),
        // An empty MIXLORA_API_KEY is an unset one (an empty --api-key is refused above).
        apiKey: o.apiKey ?? (process.env.MIXLORA_API_KEY || null),
        bodyLimit: o.bodyLimit,
        limits: { maxConnections: o.maxConnections, maxConnectionsPerClient: o.maxConnectionsPerClient },
        host: o.host,
        log,
      });
      const address = await studio.app.listen({ host: o.host, port: o.port });
      log(`ready: open ${address}/ in a browser (runs: ${path.resolve(o.runs)})`);
      await new Promise<void>((resolve) => {
        let stopping = false;
        const stop = (signal: string) => {
          if (stopping) return;
          stopping = true;
          log(`${signal}: stopping (running trainings stop at a resumable point)`);
          studio.shutdown().then(
            () => {
              log('stopped');
              resolve();
            },
            (e: Error) => {
              log(`shutdown failed: ${e.message}`);
              process.exitCode = 1;
              resolve();
            },
          );
        };
        process.on('SIGTERM', () => stop('SIGTERM'));
        process.on('SIGINT', () => stop('SIGINT'));
      });
    });
}
