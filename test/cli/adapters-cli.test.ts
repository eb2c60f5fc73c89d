// --adapter on generate and perplexity, inspect, merge and legacy conversion from the command line.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { mixlora } from '../helpers/cli.js';
import { referenceDir, STORIES_BIN, STORIES_TOK, tempDir } from '../helpers/fixtures.js';
import { randomAdapter, TEST_ADAPTER_CONFIGS } from '../helpers/test-adapters.js';
import { loadModel } from '../../src/models/load.js';
import { saveAdapter } from '../../src/adapters/io.js';

const model = ['--model', STORIES_BIN, '--tokenizer', STORIES_TOK];
const dirs: Record<string, string> = {};

before(() => {
  const { model: m } = loadModel(STORIES_BIN, { tokenizer: STORIES_TOK });
  const root = tempDir();
  for (const [name, cfg] of Object.entries(TEST_ADAPTER_CONFIGS)) {
    const a = randomAdapter(name, cfg, m, { seed: 7, std: 0.05 });
    dirs[name] = path.join(root, name);
    saveAdapter(dirs[name]!, a, { baseModel: STORIES_BIN });
    a.dispose();
  }
  m.dispose();
});

test('generate and perplexity take --adapter; an adapter changes the result', () => {
  const data = path.join(tempDir(), 'd.jsonl');
  fs.writeFileSync(data, JSON.stringify({ text: 'Once upon a time there was a little dog who liked to run.' }) + '\n');
  const base = JSON.parse(mixlora(['perplexity', ...model, '--data', data, '--json']).stdout).mean_nll as number;
  for (const name of ['lora', 'dora', 'mixlora']) {
    const r = mixlora(['perplexity', ...model, '--data', data, '--json', '--adapter', dirs[name]!]);
    assert.equal(r.code, 0, r.stderr);
    const nll = JSON.parse(r.stdout).mean_nll as number;
    assert.ok(Number.isFinite(nll) && Math.abs(nll - base) > 1e-6, `${name}: ${nll} vs base ${base}`);
    const g = mixlora([
      'generate',
      ...model,
      '--prompt',
      'Once upon a time',
      '--max-new-tokens',
      '8',
      '--adapter',
      dirs[name]!,
    ]);
    assert.equal(g.code, 0, g.stderr);
    assert.ok(g.stdout.trim().length > 0);
  }
});

test('inspect: kind, settings, parameter counts and share of the base model', () => {
  const r = mixlora(['inspect', dirs.mixlora!, '--json']);
  assert.equal(r.code, 0, r.stderr);
  const rep = JSON.parse(r.stdout);
  assert.equal(rep.kind, 'MixLoRA');
  // stories260K: dim 64, hidden 172, 5 layers, kv dim 32. Attention LoRA r 4: q,o 4·(64+64), k,v 4·(64+32);
  // router 4·64; experts ×4: gate,up 4·(64+172), down 4·(172+64).
  const perLayer = 2 * 4 * 128 + 2 * 4 * 96 + 4 * 64 + 4 * 3 * 4 * 236;
  assert.equal(rep.trainableParameters, 5 * perLayer);
  assert.ok(rep.percentOfBase > 0, 'base model found through base_model_name_or_path');
  assert.match(
    mixlora(['inspect', dirs.lora!]).stdout,
    /kind: LoRA[\s\S]*trainable parameters: [\d,]+ \([\d.]+% of the base model/,
  );
  assert.equal(mixlora(['inspect', path.join(tempDir(), 'missing')]).code, 1);
});

test('merge: the merged model generates what the adapter generates; MixLoRA is refused', () => {
  for (const name of ['lora', 'dora']) {
    const out = path.join(tempDir(), `merged-${name}`);
    const m = mixlora(['merge', ...model, '--adapter', dirs[name]!, '--out', out]);
    assert.equal(m.code, 0, m.stderr);
    const viaAdapter = mixlora([
      'generate',
      ...model,
      '--prompt',
      'Once upon a time',
      '--max-new-tokens',
      '20',
      '--adapter',
      dirs[name]!,
    ]).stdout;
    const viaMerged = mixlora([
      'generate',
      '--model',
      out,
      '--prompt',
      'Once upon a time',
      '--max-new-tokens',
      '20',
    ]).stdout;
    assert.equal(viaMerged, viaAdapter);
  }
  const r = mixlora(['merge', ...model, '--adapter', dirs.mixlora!, '--out', path.join(tempDir(), 'x')]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /MixLoRA adapter cannot be merged/);
});

test('convert --from mlora-legacy writes the current layout', () => {
  const out = path.join(tempDir(), 'modern');
  const r = mixlora([
    'convert',
    '--from',
    'mlora-legacy',
    '--adapter',
    referenceDir('adapters', 'mixlora-legacy'),
    '--out',
    out,
  ]);
  assert.equal(r.code, 0, r.stderr);
  const cfg = JSON.parse(fs.readFileSync(path.join(out, 'adapter_config.json'), 'utf8'));
  assert.equal(cfg.routing_strategy, 'mixlora');
  assert.ok(fs.existsSync(path.join(out, 'adapter_model.safetensors')));
  assert.equal(
    mixlora(['convert', '--from', 'mlora-legacy', '--adapter', dirs.lora!, '--out', path.join(tempDir(), 'y')]).code,
    1,
  );
  assert.equal(mixlora(['convert', '--from', 'mlora-legacy', '--out', path.join(tempDir(), 'y')]).code, 2);
});
