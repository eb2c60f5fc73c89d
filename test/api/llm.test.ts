// The application API's LLM: the same text as `mixlora generate` (base model and adapters, greedy), streaming
// that adds up to it, chat through the tokenizer's template (as `generate --chat`), scores equal to `mixlora
// perplexity`, and no tensor left behind by any call or after dispose().
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { LLM, stories260K, T } from '../../src/index.js';
import { saveAdapter } from '../../src/adapters/io.js';
import { loadModel } from '../../src/models/load.js';
import { TextTokenizer } from '../../src/tokenizer/tokenizer.js';
import { mixlora } from '../helpers/cli.js';
import { tempDir } from '../helpers/fixtures.js';
import { randomAdapter, TEST_ADAPTER_CONFIGS } from '../helpers/test-adapters.js';

const { model: MODEL, tokenizer: TOKENIZER } = stories260K();
const PROMPTS = ['Once upon a time', 'The little dog'];

/** LoRA and MixLoRA adapters with random lora_B (each changes the output), saved under a temp folder. */
function writeAdapters(): Record<string, string> {
  const { model } = loadModel(MODEL, { tokenizer: TOKENIZER });
  const root = tempDir();
  const dirs: Record<string, string> = {};
  let seed = 11;
  for (const name of ['lora', 'mixlora'] as const) {
    const a = randomAdapter(name, TEST_ADAPTER_CONFIGS[name], model, { seed: seed++, std: 0.3 });
    dirs[name] = path.join(root, name);
    saveAdapter(dirs[name]!, a, { baseModel: MODEL });
    a.dispose();
  }
  model.dispose();
  return dirs;
}

/** `mixlora generate` (greedy) of each prompt, with an adapter folder or none. */
function cliGenerate(prompts: string[], extra: string[] = []): string[] {
  const args = ['generate', '--model', MODEL, '--tokenizer', TOKENIZER, '--max-new-tokens', '40', '--json', ...extra];
  for (const p of prompts) args.push('--prompt', p);
  const r = mixlora(args);
  assert.equal(r.code, 0, r.stderr);
  return (JSON.parse(r.stdout) as { completions: string[] }).completions;
}

const adapters = writeAdapters();

test('generate equals `mixlora generate` for the base model and each adapter; stream adds up to it', async () => {
  const llm = await LLM.load(MODEL, { tokenizer: TOKENIZER, adapters: Object.values(adapters) });
  assert.deepEqual(llm.adapters, ['lora', 'mixlora']);
  const live = T.liveTensors();
  try {
    for (const adapter of [undefined, 'lora', 'mixlora']) {
      // The CLI generates the prompts as one batch: left padding leaves each row as it would be alone.
      const expected = cliGenerate(PROMPTS, adapter ? ['--adapter', adapters[adapter]!] : []);
      for (const [i, prompt] of PROMPTS.entries()) {
        const text = await llm.generate(prompt, { maxTokens: 40, ...(adapter ? { adapter } : {}) });
        assert.equal(text, expected[i], `${adapter ?? 'base'}: ${prompt}`);
        const pieces: string[] = [];
        for await (const piece of llm.stream(prompt, { maxTokens: 40, ...(adapter ? { adapter } : {}) }))
          pieces.push(piece);
        assert.ok(pieces.length > 5, 'streamed in pieces');
        assert.equal(pieces.join(''), text, `${adapter ?? 'base'}: the stream adds up to generate()`);
      }
    }
    // The adapters do change the text (the comparison above is not of the base model thrice).
    const base = await llm.generate(PROMPTS[0]!, { maxTokens: 40 });
    assert.notEqual(await llm.generate(PROMPTS[0]!, { maxTokens: 40, adapter: 'lora' }), base);
    assert.equal(T.liveTensors(), live, 'generate and stream leave no tensor behind');
  } finally {
    llm.dispose();
  }
});

test('stream: leaving the loop early, an AbortSignal and overlapping calls; nothing left behind', async () => {
  const llm = await LLM.load(MODEL, { tokenizer: TOKENIZER, adapters: { mine: adapters.mixlora! } });
  const live = T.liveTensors();
  try {
    let n = 0;
    for await (const piece of llm.stream('Once upon a time', { adapter: 'mine' })) {
      assert.equal(typeof piece, 'string');
      if (++n === 3) break;
    }
    const controller = new AbortController();
    let steps = 0;
    const stopped = await (async () => {
      let text = '';
      for await (const piece of llm.stream('Once upon a time', { maxTokens: 100, signal: controller.signal })) {
        text += piece;
        if (++steps === 4) controller.abort();
      }
      return text;
    })();
    const full = await llm.generate('Once upon a time', { maxTokens: 100 });
    assert.ok(full.startsWith(stopped) && stopped.length < full.length, 'the signal stopped it early');
    // Two calls at once: their decode steps interleave; each gives its own text.
    const [a, b] = await Promise.all([
      llm.generate(PROMPTS[0]!, { maxTokens: 30 }),
      llm.generate(PROMPTS[1]!, { maxTokens: 30, adapter: 'mine' }),
    ]);
    assert.equal(a, await llm.generate(PROMPTS[0]!, { maxTokens: 30 }));
    assert.equal(b, await llm.generate(PROMPTS[1]!, { maxTokens: 30, adapter: 'mine' }));
    await assert.rejects(llm.generate('x', { adapter: 'nope' }), /no adapter named 'nope' is loaded \(loaded: mine\)/);
    assert.equal(T.liveTensors(), live, 'nothing left behind');
  } finally {
    llm.dispose();
  }
  await assert.rejects(llm.generate('x'), /disposed/);
});

test('chat renders the tokenizer chat template, as `mixlora generate --chat`', async () => {
  // A tokenizer folder: tok512.bin's vocabulary as tokenizer.json, with a chat template.
  const base = TextTokenizer.fromLlama2c(TOKENIZER, 512);
  const dir = tempDir();
  fs.writeFileSync(path.join(dir, 'tokenizer.json'), JSON.stringify(base.tokenizerJson));
  const template =
    "{{ bos_token }}{% for m in messages %}{{ m['role'] + ': ' + m['content'] + '\\n' }}{% endfor %}" +
    "{% if add_generation_prompt %}{{ 'assistant:' }}{% endif %}";
  fs.writeFileSync(
    path.join(dir, 'tokenizer_config.json'),
    JSON.stringify({ ...base.config, chat_template: template }),
  );
  const llm = await LLM.load(MODEL, { tokenizer: dir });
  try {
    const reply = await llm.chat([{ role: 'user', content: 'Tell me a story' }], { maxTokens: 40 });
    const r = mixlora(
      ['generate', '--model', MODEL, '--tokenizer', dir, '--chat', '--json', '--max-new-tokens', '40'].concat([
        '--prompt',
        'Tell me a story',
      ]),
    );
    assert.equal(r.code, 0, r.stderr);
    assert.equal(reply, (JSON.parse(r.stdout) as { completions: string[] }).completions[0]);
    // The template is what makes the prompt: a different role gives another prompt, hence (here) another reply.
    const rendered = llm.tokenizer.applyChatTemplate([{ role: 'user', content: 'Tell me a story' }], {
      addGenerationPrompt: true,
    });
    assert.equal(rendered, '<s>user: Tell me a story\nassistant:');
    let streamed = '';
    for await (const piece of llm.stream([{ role: 'user', content: 'Tell me a story' }], { maxTokens: 40 }))
      streamed += piece;
    assert.equal(streamed, reply);
  } finally {
    llm.dispose();
  }
  const plain = await LLM.load(MODEL, { tokenizer: TOKENIZER });
  await assert.rejects(plain.chat([{ role: 'user', content: 'hi' }]), /no chat_template/);
  plain.dispose();
});

test('score and perplexity equal `mixlora perplexity` (base model and adapter); log-likelihoods add up', async () => {
  const texts = [
    'Once upon a time, there was a little girl named Lily.',
    'She loved to play outside in the park.',
    'The cat sat on the mat and looked at the big red ball.',
    'One day, a boy found a shiny stone.',
    'Tom and Sue went to the store to buy some milk and bread for their mom.',
    'The sun was hot.',
    'A bird sang a song in the tall green tree.',
    'They played all day and were very happy.',
    'The end.',
  ];
  const data = path.join(tempDir(), 'texts.jsonl');
  fs.writeFileSync(data, texts.map((text) => JSON.stringify({ text })).join('\n') + '\n');
  const llm = await LLM.load(MODEL, { tokenizer: TOKENIZER, adapters: [adapters.lora!] });
  const live = T.liveTensors();
  try {
    for (const adapter of [undefined, 'lora']) {
      const r = mixlora(
        ['perplexity', '--model', MODEL, '--tokenizer', TOKENIZER, '--data', data, '--json'].concat(
          adapter ? ['--adapter', adapters[adapter]!] : [],
        ),
      );
      assert.equal(r.code, 0, r.stderr);
      const cli = JSON.parse(r.stdout) as {
        examples: { tokens: number; nll: number }[];
        perplexity: number;
      };
      const scores = await llm.score(texts, adapter ? { adapter } : {});
      scores.forEach((s, i) => {
        assert.equal(s.tokens, cli.examples[i]!.tokens);
        // The same batches (8 texts, then 1) as the command: the same per-token NLL, to the last bit.
        assert.equal(s.perplexity, Math.exp(cli.examples[i]!.nll), `${adapter ?? 'base'}: text ${i}`);
        assert.ok(Math.abs(s.logprob + cli.examples[i]!.nll * s.tokens) < 1e-9);
      });
      const ppl = await llm.perplexity(texts, adapter ? { adapter } : {});
      // (summed from per-text means: equal to the command's sums up to rounding)
      assert.ok(Math.abs(ppl / cli.perplexity - 1) < 1e-12, `${ppl} vs ${cli.perplexity}`);
    }
    // A prompt/completion pair scores the completion only: the whole text's log-likelihood is the prompt's
    // plus the completion's given the prompt (the prompt's tokens begin the whole text's here).
    const prompt = 'Once upon a time, there was';
    const completion = ' a little girl named Lily.';
    const ids = llm.tokenizer.encode(prompt);
    assert.deepEqual(llm.tokenizer.encode(prompt + completion).slice(0, ids.length), ids);
    const [whole, head, tail] = await llm.score([prompt + completion, prompt, { prompt, completion }]);
    assert.equal(whole!.tokens, head!.tokens + tail!.tokens);
    assert.ok(Math.abs(whole!.logprob - (head!.logprob + tail!.logprob)) < 1e-4);
    const one = await llm.score('The end.');
    assert.equal(one.perplexity, (await llm.score(['The end.']))[0]!.perplexity);
    assert.equal(T.liveTensors(), live, 'scoring leaves no tensor behind');
  } finally {
    llm.dispose();
  }
});

test('load options: bfloat16 and int8 models load and generate; bad values are refused by name', async () => {
  const before = T.liveTensors();
  for (const o of [{ dtype: 'bfloat16' as const }, { quantize: 'int8' as const }]) {
    const llm = await LLM.load(MODEL, { tokenizer: TOKENIZER, ...o });
    assert.ok((await llm.generate('Once upon a time', { maxTokens: 8 })).length > 0);
    llm.dispose();
  }
  await assert.rejects(LLM.load(MODEL, { tokenizer: TOKENIZER, device: 'gpu' }), /device: 'gpu' is not cpu, cuda/);
  await assert.rejects(
    LLM.load(MODEL, { tokenizer: TOKENIZER, dtype: 'int4' as 'float32' }),
    /dtype: 'int4' is not a compute dtype/,
  );
  await assert.rejects(LLM.load(MODEL, { tokenizer: TOKENIZER, adapters: ['/nonexistent/adapter'] }));
  assert.equal(T.liveTensors(), before, 'dispose() frees the model and its adapters, also after a failed load');
});
