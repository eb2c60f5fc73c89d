// Issue 34, case 2: a chat template is code from the model's files. Whatever it does (allocate a huge
// list, loop forever, write a huge output), rendering it is a UserError naming the template and the
// process goes on, in the synchronous renderer (CLI) as in the asynchronous one (server), which never
// blocks the event loop. `generate --chat` with such a template exits 1 with one line.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { mixlora } from '../helpers/cli.js';
import { STORIES_BIN, STORIES_TOK, tempDir } from '../helpers/fixtures.js';
import { convertLlama2c } from '../../src/models/convert.js';
import { renderTemplate, renderTemplateAsync, TEMPLATE_LIMITS } from '../../src/tokenizer/template-render.js';

const WHERE = 'model/tokenizer.json: chat_template (tokenizer_config.json)';
/** 1 Mi characters: nine of them are past the 8 Mi characters of output a template may write. */
const big = 'x'.repeat(2 ** 20);

const hostile: { name: string; template: string; error: RegExp }[] = [
  {
    // range() grows one array: in a worker thread with resourceLimits, V8 aborted the whole process
    name: 'allocation',
    template: '{% for i in range(20000000) %}{% endfor %}',
    error: /rendering needed more than 128 MiB of memory/,
  },
  {
    name: 'runaway loop',
    template: '{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}',
    error: /rendering did not finish within 5 s \(a runaway loop\?\)/,
  },
  {
    name: 'huge output',
    template: '{% for i in range(9) %}{{ big }}{% endfor %}',
    error: new RegExp(`its output is longer than ${TEMPLATE_LIMITS.maxChars} characters`),
  },
  { name: 'syntax error', template: '{% for m in messages %}{{ m.content }', error: /Parser Error/ },
];

function refused(error: RegExp) {
  return (e: unknown) => {
    assert.equal((e as Error).name, 'UserError', String(e));
    assert.match((e as Error).message, new RegExp(`^${WHERE.replace(/[.()]/g, '\\$&')}: `));
    assert.match((e as Error).message, error);
    assert.doesNotMatch((e as Error).message, /\n/);
    return true;
  };
}

test('renderTemplate: an allocating, endless or huge template is refused naming it; the next renders', () => {
  for (const h of hostile) {
    assert.throws(() => renderTemplate(h.template, { messages: [], big }, WHERE), refused(h.error), h.name);
    assert.equal(renderTemplate('{{ messages[0].content }}!', { messages: [{ content: 'hi' }] }, WHERE), 'hi!');
  }
});

test('renderTemplateAsync: the same refusals, and the event loop runs while a template renders', async () => {
  let ticks = 0;
  const ticker = setInterval(() => ticks++, 50);
  try {
    for (const h of hostile) {
      const before = ticks;
      const started = Date.now();
      await assert.rejects(renderTemplateAsync(h.template, { messages: [], big }, WHERE), refused(h.error), h.name);
      // the timer kept firing while the renderer worked (about one tick per 50 ms)
      if (Date.now() - started > 1000) assert.ok(ticks - before >= 5, `${h.name}: ${ticks - before} ticks`);
    }
    const good = await Promise.all(['a', 'b', 'c'].map((c) => renderTemplateAsync('{{ m }}{{ m }}', { m: c }, WHERE)));
    assert.deepEqual(good, ['aa', 'bb', 'cc']);
  } finally {
    clearInterval(ticker);
  }
});

test('generate --chat with a template that allocates: exit 1, one line naming the template', () => {
  const dir = path.join(tempDir(), 'model');
  convertLlama2c(STORIES_BIN, STORIES_TOK, dir);
  const configFile = path.join(dir, 'tokenizer_config.json');
  const config = JSON.parse(fs.readFileSync(configFile, 'utf8')) as Record<string, unknown>;
  config.chat_template = hostile[0]!.template;
  fs.writeFileSync(configFile, JSON.stringify(config));
  const r = mixlora(['generate', '--model', dir, '--chat', '--prompt', 'hi', '--max-new-tokens', '2'], {
    env: { MIXLORA_NUM_THREADS: '1' },
  });
  assert.equal(r.code, 1, r.stderr);
  assert.equal(r.stdout, '');
  assert.match(
    r.stderr,
    /^mixlora: .*tokenizer\.json: chat_template \(tokenizer_config\.json\): rendering needed more than 128 MiB of memory/,
  );
  assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
});
