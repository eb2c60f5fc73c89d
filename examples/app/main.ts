// mixlora from an application: train a LoRA on a few stories about a dragon named Spark (in a process of its
// own, with a progress line), stream a completion with it, and compare perplexities with and without it.
// The model is stories260K, which the mixlora package ships: nothing to download.
//   npm install && npm run build && npm start
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { LLM, startTraining, stories260K } from 'mixlora';

const here = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const outputDir = path.join(here, 'runs', 'spark');
const { model, tokenizer } = stories260K();

// 1. Train: the config has the keys of a YAML training config; paths are relative to `cwd`.
fs.rmSync(outputDir, { recursive: true, force: true });
const run = startTraining(
  {
    base_model: model,
    tokenizer,
    output_dir: outputDir,
    seed: 1,
    save_steps: 10,
    adapters: [
      {
        name: 'spark',
        data: 'stories.jsonl',
        prompt_template: 'none',
        adapter: { peft_type: 'LORA', r: 8, lora_alpha: 16, target_modules: ['q_proj', 'k_proj', 'v_proj', 'o_proj'] },
        lr: 1e-2,
        batch_size: 4,
        num_epochs: 20,
        max_steps: 30,
      },
    ],
  },
  // One CPU thread: the model is tiny, and more threads only wait for each other (badly so on a busy machine).
  { cwd: here, threads: 1 },
);
const tty = process.stdout.isTTY;
run.on('step', (s) => {
  const line = `training ${s.adapter}: step ${s.step}/${s.totalSteps}, loss ${s.loss.toFixed(3)}`;
  // A progress line that rewrites itself on a terminal, one line every 10 steps elsewhere (CI logs).
  if (tty) process.stdout.write(`\r${line}`);
  else if (s.step % 10 === 0 || s.step === s.totalSteps) console.log(line);
});
const result = await run.result;
if (tty) process.stdout.write('\n');
console.log(`trained: ${result.adapters.spark}`);

// 2. Generate with the adapter, streamed piece by piece.
const llm = await LLM.load(model, { tokenizer, adapters: { spark: result.adapters.spark! }, threads: 1 });
const prompt = 'Once upon a time, there was a little dragon named';
process.stdout.write(`completion: ${prompt}`);
for await (const piece of llm.stream(prompt, { adapter: 'spark', maxTokens: 24 })) process.stdout.write(piece);
process.stdout.write('\n');

// 3. Perplexity of a held-out story with and without the adapter.
const heldOut = ['One day, Spark the dragon flew to the park. He saw his friend the bunny and they played.'];
const base = await llm.perplexity(heldOut);
const tuned = await llm.perplexity(heldOut, { adapter: 'spark' });
console.log(`perplexity: base model ${base.toFixed(2)}, with the spark adapter ${tuned.toFixed(2)}`);
llm.dispose();
