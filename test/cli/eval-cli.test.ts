// End to end: fine-tune stories260K briefly on a BoolQ slice (MixLoRA and LoRA together), then evaluate
// base, LoRA and MixLoRA from the command line. No tuned accuracy is asserted (it would be luck).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { mixlora } from '../helpers/cli.js';
import { STORIES_BIN, STORIES_TOK } from '../helpers/fixtures.js';
import { ALL_TARGETS, commonsenseSlice, writeConfig } from '../helpers/train.js';

test('train then eval: a table, --json with expert load, --out with pictures', () => {
  const data = commonsenseSlice('boolq.train', 32);
  const c = writeConfig({
    cutoff_len: 256,
    adapters: [
      {
        name: 'mixlora',
        data,
        lr: 2e-3,
        batch_size: 8,
        num_epochs: 1,
        adapter: {
          peft_type: 'MIXLORA',
          r: 4,
          lora_alpha: 8,
          lora_dropout: 0.05,
          target_modules: ALL_TARGETS,
          routing_strategy: 'mixlora',
          num_experts: 4,
          top_k: 2,
          router_aux_loss_coef: 0.01,
        },
      },
      {
        name: 'lora',
        data,
        lr: 2e-3,
        batch_size: 8,
        num_epochs: 1,
        adapter: { peft_type: 'LORA', r: 16, lora_alpha: 32, lora_dropout: 0.05, target_modules: ALL_TARGETS },
      },
    ],
  });
  const t = mixlora(['train', c.file, '--quiet']);
  assert.equal(t.code, 0, t.stderr);
  const run = path.join(c.dir, 'run');
  const out = path.join(c.dir, 'eval');
  const common = [
    '--model',
    STORIES_BIN,
    '--tokenizer',
    STORIES_TOK,
    '--adapter',
    'none',
    '--adapter',
    path.join(run, 'lora'),
    '--adapter',
    path.join(run, 'mixlora'),
    '--task',
    'boolq',
    '--task',
    'piqa',
    '--limit',
    '12',
  ];
  const table = mixlora(['eval', ...common, '--out', out]);
  assert.equal(table.code, 0, table.stderr);
  assert.match(table.stdout, /^adapter\s+boolq\s+piqa\s+avg\n/);
  for (const name of ['base', 'lora', 'mixlora'])
    assert.match(table.stdout, new RegExp(`\\n${name}\\s+[\\d.]+\\s+[\\d.]+\\s+[\\d.]+`));
  for (const f of ['results.json', 'results.md', 'expert-load-mixlora.png', 'expert-load-mixlora.svg'])
    assert.ok(fs.existsSync(path.join(out, f)), f);
  const j = JSON.parse(mixlora(['eval', ...common, '--json', '--scoring', 'loglik']).stdout);
  assert.equal(j.results.length, 6);
  for (const r of j.results) {
    assert.equal(r.n, 12);
    assert.ok(r.accuracy >= 0 && r.accuracy <= 1 && r.acc_norm >= 0 && r.acc_norm <= 1);
  }
  for (const task of ['boolq', 'piqa']) {
    const layers = j.expert_load[task];
    assert.equal(Object.keys(layers).length, 5);
    for (const f of Object.values(layers) as number[][]) assert.ok(Math.abs(f.reduce((a, b) => a + b, 0) - 1) < 1e-9);
  }
  assert.equal(mixlora(['eval', '--model', STORIES_BIN, '--task', 'hellaswag']).code, 2, 'no bundled hellaswag data');
  assert.equal(
    mixlora(['eval', '--model', STORIES_BIN, '--task', 'boolq', '--task', 'piqa', '--data', 'x.json']).code,
    2,
  );
});
