// `mixlora studio` in a real headless Chromium (Debian's chromium, driven by playwright-core): a run created
// from the form on stories260K, its curve growing, stopped at a checkpoint, resumed and finished; a bad form
// value shown at its field; two adapters evaluated and the table shown; two adapters side by side in chat,
// their texts equal to `mixlora generate`'s; an export. Screenshots of each screen are kept in
// build/studio-test/ (MIXLORA_STUDIO_SHOTS=DIR: there instead), at a desktop and a laptop width.
// Run with `make test-studio` (not part of `make test`: it needs the browser).
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import test, { after, before } from 'node:test';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import { NODE_FLAGS } from '../../src/util/node-flags.js';
import { MIXLORA_BIN, ROOT, STORIES_BIN, STORIES_TOK, tempDir } from '../helpers/fixtures.js';
import { mixlora } from '../helpers/cli.js';

// The page's globals, in functions that run in the page (this program is compiled without the DOM's types).
/* eslint-disable @typescript-eslint/no-explicit-any */
declare const document: any;
declare const location: any;
declare const window: any;

const CHROMIUM = process.env.MIXLORA_CHROMIUM ?? '/usr/bin/chromium';
const SHOTS = path.resolve(process.env.MIXLORA_STUDIO_SHOTS ?? path.join(ROOT, 'build', 'studio-test'));
const WIDTHS: [string, number, number][] = [
  ['desktop', 1600, 1000],
  ['laptop', 1280, 800],
];
const STORIES = [
  [
    'Once upon a time, there was a little dragon named',
    ' Spark. Spark could fly very high and he liked to help his friends.',
  ],
  ['One day, Spark the dragon', ' flew over the big hill. He saw a sad bunny and he gave the bunny a ride.'],
  [
    'The little dragon named Spark',
    ' loved to play with the bunny. They played in the sun all day and were very happy.',
  ],
  ['Spark was a kind dragon.', ' Every morning he flew to the park to say hello to his friends.'],
  ['Once upon a time, a bunny', ' lived near a big tree. The bunny liked to eat carrots with Spark.'],
  ['The sun was hot, so Spark', ' flew to the lake. He splashed in the water and laughed.'],
];

let dir = '';
let studio: ChildProcess | null = null;
let url = '';
let context: BrowserContext | null = null;
let page: Page;
const t0 = Date.now();
const say = (m: string) => process.stderr.write(`studio test: ${m} (${((Date.now() - t0) / 1000).toFixed(0)} s)\n`);

async function shoot(name: string, wait = 600, focus: string | null = null): Promise<void> {
  fs.mkdirSync(SHOTS, { recursive: true });
  for (const [label, width, height] of WIDTHS) {
    await page.setViewportSize({ width, height });
    await page.waitForTimeout(wait);
    if (focus) await page.$eval(focus, (e: any) => e.scrollIntoView({ block: 'center' }));
    await page.screenshot({ path: path.join(SHOTS, `${name}-${label}.png`), fullPage: false });
  }
  await page.setViewportSize({ width: WIDTHS[0]![1], height: WIDTHS[0]![2] });
}

async function go(hash: string): Promise<void> {
  await page.evaluate(() => delete document.body.dataset.ready);
  await page.evaluate((h) => (location.hash = h), hash);
  await page.waitForSelector('body[data-ready]');
}

/** Waits until `fn` (run in the page) is true. */
async function until(what: string, fn: () => boolean, timeoutMs = 120_000): Promise<void> {
  try {
    await page.waitForFunction(fn, undefined, { timeout: timeoutMs, polling: 250 });
  } catch (e) {
    throw new Error(`waiting for ${what}: ${(e as Error).message.split('\n')[0]}`);
  }
}

async function fill(pathName: string, value: string): Promise<void> {
  await page.fill(`[data-path="${pathName}"]`, value);
}

before(async () => {
  dir = tempDir('mixlora-studio-browser-');
  fs.mkdirSync(path.join(dir, 'data'));
  const lines = STORIES.map(([prompt, completion]) => JSON.stringify({ prompt, completion }));
  fs.writeFileSync(path.join(dir, 'data', 'stories.jsonl'), lines.join('\n') + '\n');
  studio = spawn(
    process.execPath,
    [
      ...NODE_FLAGS,
      MIXLORA_BIN,
      'studio',
      '--runs',
      path.join(dir, 'runs'),
      '--folder',
      path.join(dir, 'data'),
      '--port',
      '0',
    ],
    { stdio: ['ignore', 'ignore', 'pipe'], env: { MIXLORA_NUM_THREADS: '1', ...process.env } },
  );
  url = await new Promise<string>((resolve, reject) => {
    let err = '';
    studio!.stderr!.on('data', (d: Buffer) => {
      err += d.toString();
      const m = /open (http:\/\/\S+)\/ in a browser/.exec(err);
      if (m) resolve(m[1]!);
    });
    studio!.on('exit', (code) => reject(new Error(`mixlora studio exited (${code}): ${err}`)));
  });
  studio.stderr!.on('data', (d: Buffer) => {
    if (process.env.MIXLORA_STUDIO_LOG) process.stderr.write(d);
  });
  context = await chromium.launchPersistentContext(fs.mkdtempSync(path.join(os.tmpdir(), 'mixlora-chromium-')), {
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
    viewport: { width: WIDTHS[0]![1], height: WIDTHS[0]![2] },
  });
  page = context.pages()[0] ?? (await context.newPage());
  page.on('pageerror', (e) => say(`page error: ${e.message}`));
  // (the form's checks answer 400 while a value is wrong: the browser logs those responses)
  page.on('console', (m) => m.type() === 'error' && !/status of 400/.test(m.text()) && say(`console: ${m.text()}`));
  // Nothing may come from the network: every request goes to the studio.
  await page.route('**/*', (route) =>
    route.request().url().startsWith(url) || route.request().url().startsWith('data:')
      ? route.continue()
      : route.abort(),
  );
  await page.goto(`${url}/#runs`);
  await page.waitForSelector('body[data-ready]');
  say(`studio at ${url}`);
});

after(async () => {
  await context?.close();
  if (studio && studio.exitCode === null) {
    studio.kill('SIGTERM');
    await new Promise((r) => studio!.once('exit', r));
  }
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

/** Fills the form for a run on the stories data (`method` the segmented control's value). */
async function runForm(name: string, method: string, steps: number): Promise<void> {
  await go('#new');
  await page.selectOption('#preset', { index: 1 });
  await fill('name', name);
  await fill('adapters.0.name', method);
  await fill('adapters.0.data', 'data/stories.jsonl');
  await page.selectOption('[data-path="adapters.0.prompt_template"]', 'none');
  await fill('cutoff_len', '64');
  await fill('save_steps', '4');
  await fill('adapters.0.batch_size', '2');
  await fill('adapters.0.num_epochs', '20');
  await fill('adapters.0.max_steps', String(steps));
  await fill('adapters.0.lr', '0.005');
  await page.check(`input[name=method][value=${method}]`, { force: true });
  if (method === 'mixlora') {
    await fill('adapters.0.adapter.num_experts', '4');
    await fill('adapters.0.adapter.top_k', '2');
  }
  await until(
    'a valid form',
    () => document.querySelector('form.run-form')?.getAttribute('data-valid') === 'true',
    20_000,
  );
}

test('a bad form value shows its error at the field; YAML and the data preview', async () => {
  await runForm('dragon-lora', 'lora', 8);
  await fill('adapters.0.lr', '-1');
  await until(
    'the error at lr',
    () => document.querySelector('.field[data-field="adapters.0.lr"]')?.classList.contains('invalid') === true,
    20_000,
  );
  const message = await page.textContent('[data-error-for="adapters.0.lr"]');
  assert.match(message ?? '', /must be > 0, got -1/);
  assert.equal(await page.isDisabled('[data-action=start]'), true);
  await fill('adapters.0.adapter.r', 'many');
  await fill('adapters.0.lr', '0.005');
  await until(
    'the error at r',
    () => document.querySelector('.field[data-field="adapters.0.adapter.r"]')?.classList.contains('invalid') === true,
    20_000,
  );
  assert.match((await page.textContent('[data-error-for="adapters.0.adapter.r"]')) ?? '', /must be an integer/);
  assert.equal(await page.$$eval('.field.invalid', (els) => els.length), 1);
  await shoot('new-run-error', 200, '.field[data-field="adapters.0.adapter.r"]');
  await fill('adapters.0.adapter.r', '8');
  await until(
    'a valid form',
    () => document.querySelector('form.run-form')?.getAttribute('data-valid') === 'true',
    20_000,
  );
  await page.click('[data-action=yaml]');
  const yaml = await page.textContent('[data-yaml]');
  assert.match(yaml ?? '', /output_dir: dragon-lora/);
  assert.match(yaml ?? '', /max_steps: 8/);
  await page.click('[data-action=preview]');
  await page.waitForSelector('.preview .record');
  const prompt = await page.$$eval('.preview .record:first-child .tok.prompt', (els) =>
    els.map((e) => e.textContent).join(''),
  );
  const scored = await page.$$eval('.preview .record:first-child .tok.scored', (els) =>
    els.map((e) => e.textContent).join(''),
  );
  assert.match(prompt, /little dragon named/);
  assert.match(scored, /Spark could fly very high/);
  await page.evaluate(() => window.scrollTo(0, 0));
  await shoot('new-run', 200);
});

test('runs from the form train; the curve grows; stop at a checkpoint, resume, finish', async () => {
  // The LoRA run of the first test, then a MixLoRA run beside it.
  await page.click('[data-action=start]');
  await page.waitForSelector('.run-title h2');
  await runForm('dragon-mix', 'mixlora', 16);
  await page.click('[data-action=start]');
  await until('the dragon-mix page', () => location.hash === '#runs/dragon-mix');
  say('runs started');
  const points = async () => Number((await page.getAttribute('[data-metric=loss]', 'data-points')) ?? 0);
  await until(
    'a point on the loss curve',
    () => Number(document.querySelector('[data-metric=loss]')?.getAttribute('data-points') ?? 0) >= 1,
  );
  const first = await points();
  await page.waitForFunction(
    (n: number) => Number(document.querySelector('[data-metric=loss]')?.getAttribute('data-points') ?? 0) > n,
    first,
    { timeout: 120_000, polling: 250 },
  );
  assert.ok((await points()) > first);
  // Stopped once a checkpoint is written: it stops after the step in progress, resumable from there.
  await until('a checkpoint', () => /checkpoint-\d/.test(document.querySelector('.panels')?.textContent ?? ''));
  await page.click('[data-action=stop]');
  await until('the run stopped', () => document.querySelector('.run-title .badge')?.textContent === 'resumable');
  say('stopped');
  await shoot('run-stopped');
  await page.click('[data-action=resume]');
  await until(
    'the run running again',
    () => document.querySelector('.run-title .badge')?.textContent === 'running',
    20_000,
  );
  await until(
    'the run finished',
    () => document.querySelector('.run-title .badge')?.textContent === 'finished',
    240_000,
  );
  await until(
    '16 points',
    () => document.querySelector('[data-metric=loss]')?.getAttribute('data-points') === '16',
    20_000,
  );
  const metrics = fs
    .readFileSync(path.join(dir, 'runs', 'dragon-mix', 'metrics.jsonl'), 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as { step: number });
  assert.deepEqual(
    metrics.map((m) => m.step),
    Array.from({ length: 16 }, (_, i) => i + 1),
  );
  // The log is polled: wait for it rather than read it once.
  await until(
    'the resumed job in the log',
    () => /resumed|--resume/.test(document.querySelector('.joblog pre')?.textContent ?? ''),
    20_000,
  );
  say('finished');
  await until(
    'the other run finished',
    () => document.querySelector('[data-run="dragon-lora"] .badge')?.textContent === 'finished',
    240_000,
  );
  // Both runs overlaid.
  await page.check('[data-run="dragon-lora"] input[type=checkbox]');
  await until(
    'both runs on the curves',
    () => Number(document.querySelector('[data-metric=loss]')?.getAttribute('data-points') ?? 0) === 24,
    20_000,
  );
  await page.waitForSelector('[data-metric=aux]:not([hidden])');
  await shoot('runs');
});

test('two adapters evaluated: the table, the heatmaps, the results kept with the run', async () => {
  await go('#eval');
  for (const a of ['dragon-lora/lora', 'dragon-mix/mixlora']) await page.check(`input[name=adapter][value="${a}"]`);
  await page.fill('input[name=limit]', '20');
  await page.click('[data-action=evaluate]');
  await page.waitForSelector('.eval-result table', { timeout: 180_000 });
  const rows = await page.$$eval('.eval-result tr[data-adapter]', (trs) =>
    trs.map((t) => t.getAttribute('data-adapter')),
  );
  assert.deepEqual(rows.sort(), ['base', 'lora', 'mixlora']);
  await page.waitForSelector('.eval-result .heatmap svg');
  const kept = JSON.parse(fs.readFileSync(path.join(dir, 'runs', 'dragon-lora', 'eval', 'results.json'), 'utf8')) as {
    results: { adapter: string; task: string; accuracy: number }[];
  };
  const cell = await page.textContent('.eval-result tr[data-adapter=mixlora] td:nth-child(2)');
  const acc = kept.results.find((r) => r.adapter === 'mixlora' && r.task === 'arc-e')!.accuracy;
  assert.equal(Number(cell), Number((100 * acc).toPrecision(3)));
  say('evaluated');
  await shoot('evaluate', 900);
});

test('chat: base and two adapters side by side; greedy texts equal mixlora generate', async () => {
  await go('#chat/dragon-mix');
  await page.check('input[name=chat-adapter][value="dragon-lora/lora"]');
  await page.waitForSelector('.column-body[data-model="dragon-lora:lora"]');
  await page.fill('#chat-max', '24');
  await page.fill('#chat-temp', '0');
  const prompt = 'Once upon a time, there was a little dragon named';
  await page.fill('#chat-prompt', prompt);
  await page.click('[data-action=send]');
  await until('three answers', () => document.querySelectorAll('[data-answer][data-done]').length === 3, 60_000);
  const texts = await page.$$eval('.column-body', (els) =>
    Object.fromEntries(els.map((e) => [e.getAttribute('data-model'), e.querySelector('[data-answer]')!.textContent])),
  );
  const generate = (adapter: string | null) =>
    mixlora([
      'generate',
      '--model',
      STORIES_BIN,
      '--tokenizer',
      STORIES_TOK,
      ...(adapter ? ['--adapter', path.join(dir, 'runs', adapter)] : []),
      '--prompt',
      prompt,
      '--max-new-tokens',
      '24',
    ]).stdout.replace(/\n$/, '');
  assert.equal(texts['stories260K'], generate(null));
  assert.equal(texts['dragon-mix:mixlora'], generate('dragon-mix/mixlora'));
  assert.equal(texts['dragon-lora:lora'], generate('dragon-lora/lora'));
  assert.notEqual(texts['dragon-mix:mixlora'], texts['stories260K']);
  say('chatted');
  await shoot('chat');
});

test('export: a LoRA merged into its base model', async () => {
  await go('#export');
  await page.selectOption('#export-adapter', 'dragon-lora/lora');
  await page.click('[data-action=export]');
  await page.waitForSelector('[data-export-folder]', { timeout: 60_000 });
  const folder = path.join(dir, 'runs', 'exports', 'dragon-lora-lora-merged');
  assert.ok(fs.existsSync(path.join(folder, 'config.json')));
  await shoot('export');
});
