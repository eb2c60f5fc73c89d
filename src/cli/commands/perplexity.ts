// mixlora perplexity: token-weighted mean NLL and perplexity of a model over JSONL data.
import { Command } from 'commander';
import { addModelOptions, intArg, openModel, type ModelCliOptions } from '../options.js';
import { createProgress } from '../progress.js';
import { adapterHooks, addAdapterOption } from '../adapter-option.js';

export function perplexityCommand(): Command {
  const cmd = new Command('perplexity')
    .description(
      'perplexity of a model (and adapter) over JSONL: {"text": ...} or {"input_ids": [...], "labels": [...]} per line',
    )
    .requiredOption('--data <file>', 'JSONL data file')
    .option('--batch-size <n>', 'examples per forward pass', intArg('--batch-size', 1), 8)
    .option('--json', 'print {"examples", "mean_nll", "perplexity"} as JSON');
  addModelOptions(cmd);
  addAdapterOption(cmd);
  return cmd.action(
    async (o: ModelCliOptions & { data: string; batchSize: number; json?: boolean; adapter?: string }) => {
      const { perplexity, readPerplexityData } = await import('../../eval/perplexity.js');
      const loaded = await openModel(o);
      const hooks = await adapterHooks(loaded, o.adapter);
      const maxPos = loaded.model.config.maxPositionEmbeddings;
      // Far past the context a record is certainly a mistake, and would cost memory without bound.
      const data = readPerplexityData(o.data, loaded.tokenizer, loaded.model.config.vocabSize, {
        maxTokens: 8 * maxPos,
      });
      const over = data.filter((e) => e.inputIds.length > maxPos).length;
      if (over > 0)
        process.stderr.write(
          `warning: ${over} example(s) of ${o.data} are longer than the model's max_position_embeddings (${maxPos}); its predictions there are out of its training range\n`,
        );
      const progress = createProgress();
      const bar = progress.bar('perplexity', data.length);
      const result = perplexity(loaded.model, data, { batchSize: o.batchSize, hooks, onBatch: (n) => bar.update(n) });
      bar.stop();
      progress.stop();
      if (o.json) {
        process.stdout.write(JSON.stringify(result) + '\n');
      } else {
        const tokens = result.examples.reduce((a, e) => a + e.tokens, 0);
        process.stdout.write(
          `examples ${result.examples.length}, scored tokens ${tokens}, mean NLL ${result.mean_nll?.toFixed(4) ?? 'n/a'}, perplexity ${result.perplexity?.toFixed(4) ?? 'n/a'}\n`,
        );
      }
    },
  );
}
