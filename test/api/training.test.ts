// startTraining: the run goes on in a process of its own while this process's event loop keeps turning; its
// steps, checkpoints and end come back as events (EventEmitter and async iterator); an AbortSignal stops it
// within one step at a checkpoint that `mixlora train --resume` continues exactly (the adapter equals an
// uninterrupted run's, as in test/train/resume.test.ts); evaluate() gives `mixlora eval`'s numbers.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { evaluate, startTraining, type TrainingEvent, type TrainingStepEvent } from '../../src/index.js';
import { mixlora } from '../helpers/cli.js';
import { STORIES_BIN, STORIES_TOK, tempDir } from '../helpers/fixtures.js';
import { adapterTensors, commonsenseSlice, maxDiff, readMetrics, writeConfig } from '../helpers/train.js';

const STEPS = 24;

/** A LoRA on stories260K for STEPS steps of 4 BoolQ questions, a checkpoint every 2 steps: 3-6 s here. */
function config(data: string): Record<string, unknown> {
  return {
    cutoff_len: 96,
    save_steps: 2,
    adapters: [
      {
        name: 'lora',
        data,
        prompt_template: 'none',
        lr: 2e-3,
        batch_size: 4,
        micro_batch_size: 2,
        num_epochs: 10,
        max_steps: STEPS,
        adapter: { peft_type: 'LORA', r: 4, lora_alpha: 8, lora_dropout: 0, target_modules: ['q_proj', 'v_proj'] },
      },
    ],
  };
}

interface Gap {
  /** Wall-clock milliseconds since the previous tick. */
  wall: number;
  /** Of those, milliseconds the event loop was busy (running JavaScript or native calls), from
   * performance.eventLoopUtilization(): the part this process itself could have caused. */
  busy: number;
}

/** Ticks of a 50 ms interval with the gap before each. */
function watchTicks(): { stop(): Gap[] } {
  const gaps: Gap[] = [];
  let last = performance.now();
  let lastElu = performance.eventLoopUtilization();
  const timer = setInterval(() => {
    const now = performance.now();
    const elu = performance.eventLoopUtilization();
    gaps.push({ wall: now - last, busy: performance.eventLoopUtilization(elu, lastElu).active });
    last = now;
    lastElu = elu;
  }, 50);
  return {
    stop: () => {
      clearInterval(timer);
      return gaps;
    },
  };
}

test('startTraining: the event loop keeps turning; abort stops within one step; --resume continues exactly', async () => {
  const data = commonsenseSlice('boolq.train', 24);

  // The uninterrupted run, through the library too: every step reported, the adapter saved.
  const straight = writeConfig(config(data));
  const run = startTraining(straight.file, { threads: 1 });
  const iterated: TrainingEvent[] = [];
  const iterating = (async () => {
    for await (const e of run) iterated.push(e);
  })();
  const emitted: TrainingStepEvent[] = [];
  run.on('step', (e) => emitted.push(e));
  const done = await run.result;
  await iterating;
  assert.equal(done.status, 'completed');
  assert.deepEqual(done.adapters, { lora: path.join(straight.dir, 'run', 'lora') });
  assert.deepEqual(
    emitted.map((e) => e.step),
    Array.from({ length: STEPS }, (_, i) => i + 1),
  );
  assert.ok(emitted.every((e) => e.totalSteps === STEPS && Number.isFinite(e.loss) && e.tokens > 0));
  // The events are metrics.jsonl's lines.
  assert.deepEqual(
    emitted.map((e) => e.loss),
    readMetrics(path.join(straight.dir, 'run')).map((m) => m.loss),
  );
  const kinds = iterated.map((e) => e.type);
  assert.equal(kinds[0], 'start');
  assert.equal(kinds.at(-1), 'done');
  assert.equal(kinds.filter((k) => k === 'step').length, STEPS);
  assert.equal(kinds.filter((k) => k === 'checkpoint').length, STEPS / 2 - 1, 'every 2 steps but the last');

  // The same run, aborted: while it trains, a 50 ms interval here keeps firing.
  const killed = writeConfig(config(data));
  const controller = new AbortController();
  const ticks = watchTicks();
  const started = performance.now();
  const aborted = startTraining(killed.file, { signal: controller.signal, threads: 1 });
  const steps: number[] = [];
  let stepsAtAbort = -1;
  aborted.on('step', (e) => {
    steps.push(e.step);
    if (e.step === 15) {
      stepsAtAbort = steps.length;
      controller.abort();
    }
  });
  const result = await aborted.result;
  const seconds = (performance.now() - started) / 1000;
  const gaps = ticks.stop();
  assert.equal(result.status, 'aborted');
  assert.ok(stepsAtAbort > 0, 'aborted after step 15');
  assert.ok(steps.length - stepsAtAbort <= 1, `stopped within one step of the abort (steps seen: ${steps.join(' ')})`);
  // It stops right after a checkpoint of the step it finishes (save_steps or not).
  const last = steps.at(-1)!;
  assert.ok(result.checkpoint !== null && fs.existsSync(result.checkpoint), 'a checkpoint to resume from');
  const state = JSON.parse(fs.readFileSync(path.join(result.checkpoint, 'state.json'), 'utf8')) as {
    adapters: { step: number }[];
  };
  assert.equal(state.adapters[0]!.step, last, `a checkpoint of the last step (steps seen: ${steps.join(' ')})`);
  assert.ok(!fs.existsSync(path.join(killed.dir, 'run', 'lora')), 'not finished');

  // The event loop was never blocked: the training loop (seconds of synchronous work) is in the other process.
  // Gaps are measured with what the loop was busy doing in each: a gap the loop caused shows as busy time; a
  // gap with an idle loop means the OS ran other processes (this machine is shared and loaded), which is
  // allowed a margin (2 s) without failing the test.
  const worst = gaps.reduce((a, g) => (g.wall > a.wall ? g : a), { wall: 0, busy: 0 });
  const blocked = gaps.filter((g) => g.wall > 250 && g.busy > 200);
  const late = gaps.filter((g) => g.wall > 250);
  const report = `${gaps.length} ticks in ${seconds.toFixed(1)} s; worst gap ${worst.wall.toFixed(0)} ms (${worst.busy.toFixed(0)} ms busy); over 250 ms: ${late.map((g) => `${g.wall.toFixed(0)}/${g.busy.toFixed(0)}`).join(', ') || 'none'}`;
  process.stderr.write(`event loop during training: ${report}\n`);
  assert.ok(seconds > 1, `the run lasted ${seconds} s`);
  assert.deepEqual(blocked, [], `the event loop was blocked: ${report}`);
  assert.ok(worst.wall < 2000, report);
  assert.ok(late.length <= Math.max(3, gaps.length / 20), report);
  assert.ok(gaps.length >= (seconds * 1000) / 50 / 2, report);

  // The command line continues it, to exactly the uninterrupted run's adapter.
  const resumed = mixlora(['train', killed.file, '--resume', '--quiet'], { env: { MIXLORA_NUM_THREADS: '1' } });
  assert.equal(resumed.code, 0, resumed.stderr);
  assert.equal(
    maxDiff(
      adapterTensors(path.join(killed.dir, 'run', 'lora')),
      adapterTensors(path.join(straight.dir, 'run', 'lora')),
    ),
    0,
    'the resumed run ends with the uninterrupted run’s weights',
  );
});

test('startTraining: a config object (paths relative to cwd), resume through the library, errors reject', async () => {
  const dir = tempDir();
  fs.copyFileSync(commonsenseSlice('boolq.train', 8), path.join(dir, 'data.jsonl'));
  const cfg = {
    base_model: STORIES_BIN,
    tokenizer: STORIES_TOK,
    output_dir: 'out',
    save_steps: 1,
    adapters: [
      {
        name: 'tiny',
        data: 'data.jsonl',
        prompt_template: 'none',
        batch_size: 2,
        max_steps: 3,
        adapter: { peft_type: 'LORA', r: 2, lora_alpha: 4, lora_dropout: 0, target_modules: ['q_proj'] },
      },
    ],
  };
  const controller = new AbortController();
  const first = startTraining(cfg, { cwd: dir, threads: 1, signal: controller.signal });
  first.once('checkpoint', () => controller.abort());
  const stopped = await first.result;
  assert.equal(stopped.status, 'aborted');
  assert.equal(stopped.outputDir, path.join(dir, 'out'));
  assert.match(stopped.checkpoint ?? '', /checkpoint-[12]$/);
  const again = await startTraining(cfg, { cwd: dir, threads: 1, resume: true }).result;
  assert.equal(again.status, 'completed');
  assert.equal(again.resumedFrom, stopped.checkpoint);
  assert.ok(fs.existsSync(path.join(again.adapters.tiny!, 'adapter_model.safetensors')));
  // Without resume, a used output_dir is refused (as `mixlora train`), and the message comes back.
  await assert.rejects(
    startTraining(cfg, { cwd: dir }).result,
    /already holds a training run: continue it with --resume/,
  );
  await assert.rejects(startTraining(path.join(dir, 'missing.yaml')).result, /missing\.yaml/);
  const failing = startTraining(
    { ...cfg, output_dir: 'other', adapters: [{ ...cfg.adapters[0], lr: -1 }] },
    { cwd: dir },
  );
  const errors: Error[] = [];
  failing.on('error', (e) => errors.push(e));
  await assert.rejects(failing.result, /lr/);
  assert.equal(errors.length, 1);
});

test('evaluate() returns what `mixlora eval --json` prints', async () => {
  const args = ['--model', STORIES_BIN, '--tokenizer', STORIES_TOK, '--task', 'boolq', '--task', 'arc-e'];
  const cli = mixlora(['eval', ...args, '--limit', '6', '--prompt-template', 'none', '--json']);
  assert.equal(cli.code, 0, cli.stderr);
  const report = await evaluate({
    model: STORIES_BIN,
    tokenizer: STORIES_TOK,
    tasks: ['boolq', 'arc-e'],
    limit: 6,
    promptTemplate: 'none',
  });
  assert.deepEqual(report, JSON.parse(cli.stdout));
  assert.deepEqual(
    report.results.map((r) => [r.adapter, r.task, r.n]),
    [
      ['base', 'boolq', 6],
      ['base', 'arc-e', 6],
    ],
  );
  await assert.rejects(evaluate({ model: STORIES_BIN, tokenizer: STORIES_TOK, tasks: ['nope'] }), /--task nope/);
  const controller = new AbortController();
  const pending = evaluate({ model: STORIES_BIN, tokenizer: STORIES_TOK, tasks: ['boolq'], signal: controller.signal });
  controller.abort();
  await assert.rejects(pending, { name: 'AbortError' });
});
