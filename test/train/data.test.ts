// Training data shapes become the right ids and labels: prompts masked unless train_on_inputs,
// chat turns scored only for the assistant, pre-tokenised records used exactly, long ones truncated.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { STORIES_TOK, tempDir } from '../helpers/fixtures.js';
import { TextTokenizer } from '../../src/tokenizer/tokenizer.js';
import { IGNORE_INDEX, loadExamples } from '../../src/data/examples.js';
import { compileTemplate } from '../../src/data/templates.js';

const tok = TextTokenizer.fromLlama2c(STORIES_TOK, 512);
const opts = { template: 'alpaca', trainOnInputs: false, cutoffLen: 512, vocabSize: 512 };

function file(lines: unknown[]): string {
  const f = path.join(tempDir(), 'd.jsonl');
  fs.writeFileSync(f, lines.map((l) => JSON.stringify(l)).join('\n') + '\n');
  return f;
}

test('alpaca records: the prompt is masked, the output and EOS are scored; train_on_inputs scores all', () => {
  const rec = { instruction: 'Is the sky blue?', input: '', output: 'the correct answer is true' };
  const { examples } = loadExamples(file([rec]), tok, opts);
  const ex = examples[0]!;
  const prompt = compileTemplate('alpaca')(rec).prompt;
  const promptLen = tok.encode(prompt).length;
  assert.deepEqual(ex.inputIds, [...tok.encode(prompt + rec.output), 2]);
  assert.ok(ex.labels.slice(0, promptLen).every((l) => l === IGNORE_INDEX));
  assert.deepEqual(ex.labels.slice(promptLen), ex.inputIds.slice(promptLen));
  assert.equal(tok.decode(ex.labels.slice(promptLen).filter((l) => l !== 2)).trim(), 'the correct answer is true');
  const all = loadExamples(file([rec]), tok, { ...opts, trainOnInputs: true }).examples[0]!;
  assert.deepEqual(all.labels, all.inputIds);
  // With an input, the template's "### Input:" section appears.
  const withInput = loadExamples(file([{ ...rec, input: 'context here' }]), tok, opts).examples[0]!;
  assert.match(tok.decode(withInput.inputIds), /### Input:\ncontext here/);
});

test('prompt/completion, pre-tokenised, truncation and dropped records', () => {
  assert.ok(tok.encode('Q: hi\nA: hello').length + 1 <= 16, 'the prompt/completion record fits the cutoff');
  const { examples, stats } = loadExamples(
    file([
      { prompt: 'Q: hi\nA:', completion: ' hello' },
      { input_ids: [1, 5, 6, 7], labels: [-100, -100, 6, 7] },
      { input_ids: [1, 5, 6, 7] },
      { input_ids: Array.from({ length: 20 }, (_, i) => 3 + i), labels: [...Array(17).fill(-100), 1, 2, 3] },
    ]),
    tok,
    { ...opts, cutoffLen: 16 },
  );
  assert.equal(examples.length, 3);
  assert.deepEqual(examples[1], { inputIds: [1, 5, 6, 7], labels: [-100, -100, 6, 7] });
  assert.deepEqual(examples[2]!.labels, [1, 5, 6, 7]);
  assert.equal(stats.truncated, 1);
  assert.equal(stats.droppedUnscored, 1, 'the long record has nothing scored within the first 16 tokens');
  assert.ok(examples[0]!.labels.includes(IGNORE_INDEX));
});

test('chat records: rendered with the chat template, only assistant turns scored', () => {
  const chat = new TextTokenizer(
    tok.tokenizerJson,
    {
      ...tok.config,
      chat_template:
        "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}",
    },
    'chat',
  );
  const ex = loadExamples(
    file([
      {
        messages: [
          { role: 'user', content: 'Hi there' },
          { role: 'assistant', content: 'Hello friend' },
          { role: 'user', content: 'Bye' },
        ],
      },
    ]),
    chat,
    opts,
  ).examples[0]!;
  const scored = ex.labels.filter((l) => l !== IGNORE_INDEX);
  assert.match(chat.decode(scored), /^\s*Hello friend\s*$/);
  assert.equal(chat.decode(ex.inputIds), '<user>Hi there\n<assistant>Hello friend\n<user>Bye\n');
});
