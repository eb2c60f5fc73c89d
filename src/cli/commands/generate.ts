// mixlora generate: continue prompts with a model; prints only the completions.
import { Command } from 'commander';
import { addModelOptions, intArg, numArg, openModel, positiveNumArg, type ModelCliOptions } from '../options.js';
import { createProgress } from '../progress.js';
import { addAdapterOption, inferenceAdapter } from '../adapter-option.js';

interface GenerateCliOptions extends ModelCliOptions {
  adapter?: string;
  prompt: string[];
  maxNewTokens: number;
  temperature: number;
  topP?: number;
  topK?: number;
  repetitionPenalty?: number;
  seed?: number;
  chat?: boolean;
  json?: boolean;
}

export function generateCommand(): Command {
  const cmd = new Command('generate')
    .description('generate text: prints the completion of each --prompt (not the prompt)')
    .requiredOption('--prompt <text>', 'prompt text; repeat for a batch', (v: string, prev: string[] = []) => [
      ...prev,
      v,
    ])
    .option('--max-new-tokens <n>', 'tokens to generate at most', intArg('--max-new-tokens', 1), 128)
    .option('--temperature <t>', 'sampling temperature; 0 is greedy', numArg('--temperature', 0), 0)
    .option(
      '--top-p <p>',
      'nucleus sampling: keep the smallest set of tokens with probability >= p',
      numArg('--top-p', 0, 1),
    )
    .option('--top-k <k>', 'keep the k most likely tokens', intArg('--top-k', 1))
    .option(
      '--repetition-penalty <r>',
      'divide the logits of tokens already present by r (> 0; 1 = none, > 1 discourages repeats)',
      positiveNumArg('--repetition-penalty'),
    )
    .option('--seed <s>', 'random seed for sampling', intArg('--seed', 0))
    .option('--chat', "wrap each prompt as a user message with the tokenizer's chat template")
    .option('--json', 'print {"completions": [...]} as JSON');
  addModelOptions(cmd);
  addAdapterOption(cmd);
  return cmd.action(async (o: GenerateCliOptions) => {
    const { generate, newTokensThatFit } = await import('../../generate/generate.js');
    const loaded = await openModel(o);
    const { model, tokenizer } = loaded;
    const adapter = await inferenceAdapter(loaded, o.adapter);
    // A chat template writes its own special tokens (as transformers' apply_chat_template does).
    const prompts = o.prompt.map((p) =>
      o.chat
        ? tokenizer.encode(tokenizer.applyChatTemplate([{ role: 'user', content: p }], { addGenerationPrompt: true }), {
            special: false,
          })
        : tokenizer.encode(p),
    );
    const longest = Math.max(...prompts.map((p) => p.length));
    const fits = newTokensThatFit(model, longest, o.maxNewTokens);
    if (fits < o.maxNewTokens && fits > 0)
      process.stderr.write(
        `note: --max-new-tokens ${o.maxNewTokens} capped to ${fits}: the model's context is ${model.config.maxPositionEmbeddings} positions (max_position_embeddings) and the longest prompt has ${longest} tokens\n`,
      );
    const progress = createProgress();
    const bar = progress.bar('generate', Math.max(1, fits));
    const out = generate(model, prompts, {
      maxNewTokens: o.maxNewTokens,
      temperature: o.temperature,
      topK: o.topK ?? null,
      topP: o.topP ?? null,
      repetitionPenalty: o.repetitionPenalty ?? null,
      seed: o.seed ?? null,
      stopIds: model.config.eosTokenIds,
      adapter,
      onStep: (n) => bar.update(n),
    });
    bar.stop();
    progress.stop();
    const texts = out.map((ids, i) =>
      tokenizer.decodeContinuation(
        prompts[i]!,
        ids.filter((id) => !model.config.eosTokenIds.includes(id)),
      ),
    );
    if (o.json) process.stdout.write(JSON.stringify({ completions: texts }) + '\n');
    else process.stdout.write(texts.join('\n\n') + '\n');
  });
}
