// adapter_model.bin as the reference tools read it: PyTorch 2.x's torch.load(weights_only=True) gets
// the same names and values as the safetensors file; our own loader reads it back; `mixlora convert
// --format` goes both ways; `save_formats` in a training config writes both files.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { mixlora } from '../helpers/cli.js';
import { STORIES_BIN, STORIES_TOK, tempDir } from '../helpers/fixtures.js';
import { runPython } from '../helpers/python.js';
import { commonsenseSlice, writeConfig } from '../helpers/train.js';
import * as T from '../../src/tensor/index.js';
import { loadModel } from '../../src/models/load.js';
import { Adapter } from '../../src/adapters/adapter.js';
import { parseAdapterConfig } from '../../src/adapters/config.js';
import { loadAdapter, saveAdapter } from '../../src/adapters/io.js';
import { adapterStateDict } from '../../src/adapters/state-dict.js';
import { loadAll } from '../../src/io/safetensors.js';
import { readTorchCheckpoint, writeTorchCheckpoint } from '../../src/io/torch-zip.js';
import { expertKey, routerKey } from '../../src/adapters/keys.js';
import { readTrainConfig } from '../../src/train/config.js';
import { train } from '../../src/train/trainer.js';

const ALL = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'];

// Loads the .bin with weights_only=True and the .safetensors with safetensors, and compares exactly.
const COMPARE = `
import sys, json, torch
from safetensors.torch import load_file
b = torch.load(sys.argv[1], weights_only=True)
s = load_file(sys.argv[2])
assert type(b) is dict, type(b)
out = {"keys": sorted(b.keys()), "same_keys": sorted(b.keys()) == sorted(s.keys()),
       "mismatch": [k for k in s if k not in b or b[k].dtype != s[k].dtype or b[k].shape != s[k].shape or not torch.equal(b[k], s[k])],
       "torch": torch.__version__}
print(json.dumps(out))
`;

test('a saved MixDoRA adapter as adapter_model.bin: torch.load(weights_only=True) = safetensors, our loader reads it back', async () => {
  const { model } = loadModel(STORIES_BIN, { tokenizer: STORIES_TOK });
  T.manualSeed(5);
  const cfg = parseAdapterConfig(
    {
      peft_type: 'MIXLORA',
      r: 4,
      lora_alpha: 8,
      use_dora: true,
      target_modules: ALL,
      routing_strategy: 'mixlora',
      num_experts: 3,
      top_k: 2,
      lora_dropout: 0,
    },
    'test',
  );
  const a = Adapter.create('mixdora', cfg, model);
  T.noGrad(() => {
    for (const p of a.parameters()) if (p.name.includes('lora_B')) p.tensor.normal_(0, 0.05);
  });
  const dir = path.join(tempDir(), 'both');
  saveAdapter(dir, a, { baseModel: STORIES_BIN, formats: ['safetensors', 'bin'] });
  assert.deepEqual(fs.readdirSync(dir).sort(), [
    'adapter_config.json',
    'adapter_model.bin',
    'adapter_model.safetensors',
  ]);
  const r = JSON.parse(
    runPython(COMPARE, [path.join(dir, 'adapter_model.bin'), path.join(dir, 'adapter_model.safetensors')]),
  ) as { keys: string[]; same_keys: boolean; mismatch: string[]; torch: string };
  assert.match(r.torch, /^2\./, 'the check needs PyTorch 2.x');
  assert.equal(r.same_keys, true);
  assert.deepEqual(r.mismatch, []);
  // The reference tools' names (adapters/keys.ts).
  assert.ok(r.keys.includes(routerKey(0)));
  assert.ok(r.keys.includes(expertKey(1, 'down_proj', 2, 'lora_B')));
  assert.ok(r.keys.includes('mixlora.layers.0.self_attn.q_proj.lora_magnitude_vector'));

  // Our reader: the same tensors; a folder holding only the .bin loads to the same adapter.
  const st = loadAll(path.join(dir, 'adapter_model.safetensors')).tensors;
  const bin = await readTorchCheckpoint(path.join(dir, 'adapter_model.bin'));
  assert.deepEqual([...bin.keys()], [...st.keys()]);
  for (const [k, t] of st) assert.deepEqual(bin.get(k)!.toFloat32Array(), t.toFloat32Array(), k);
  const binOnly = path.join(tempDir(), 'bin-only');
  fs.mkdirSync(binOnly);
  for (const f of ['adapter_config.json', 'adapter_model.bin'])
    fs.copyFileSync(path.join(dir, f), path.join(binOnly, f));
  const back = await loadAdapter(binOnly, model);
  const [sa, sb] = [adapterStateDict(a), adapterStateDict(back)];
  T.tidy(() => {
    for (const [k, t] of sa)
      assert.equal(
        T.noGrad(() => t.sub(sb.get(k)!).abs().amax().item()),
        0,
        k,
      );
  });
  for (const m of [st, bin]) for (const t of m.values()) t.dispose();
  a.dispose();
  back.dispose();
  model.dispose();
});

test('the .bin writer keeps dtypes, shapes (0-d, empty) and strided views as torch.load reads them', async () => {
  const dir = tempDir();
  const file = path.join(dir, 'x.bin');
  const base = T.arange(0, 12).reshape(3, 4);
  const m = new Map<string, T.Tensor>([
    [
      'f32',
      T.tensor([
        [1.5, -2],
        [3, 4.25],
      ]),
    ],
    ['f16', T.tensor([0.5, 1024], { dtype: 'float16' })],
    ['bf16', T.tensor([-3, 7.5], { dtype: 'bfloat16' })],
    ['i64', T.tensor([2 ** 40, -5], { dtype: 'int64' })],
    ['scalar', T.tensor(9.5)],
    ['empty', T.zeros([0, 3])],
    ['transposed', base.transpose(0, 1)],
  ]);
  writeTorchCheckpoint(file, m);
  const out = JSON.parse(
    runPython(
      `import sys, json, torch
d = torch.load(sys.argv[1], weights_only=True)
print(json.dumps({k: [str(v.dtype), list(v.shape), v.float().flatten().tolist() if k != "i64" else v.tolist()] for k, v in d.items()}))`,
      [file],
    ),
  ) as Record<string, [string, number[], number[]]>;
  assert.deepEqual(out, {
    f32: ['torch.float32', [2, 2], [1.5, -2, 3, 4.25]],
    f16: ['torch.float16', [2], [0.5, 1024]],
    bf16: ['torch.bfloat16', [2], [-3, 7.5]],
    i64: ['torch.int64', [2], [2 ** 40, -5]],
    scalar: ['torch.float32', [], [9.5]],
    empty: ['torch.float32', [0, 3], []],
    transposed: ['torch.int64', [4, 3], [0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11]],
  });
  const back = await readTorchCheckpoint(file);
  assert.deepEqual(back.get('transposed')!.toNumbers(), [0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11]);
  assert.deepEqual(back.get('i64')!.toNumbers(), [2 ** 40, -5]);
  for (const t of [...m.values(), ...back.values(), base]) t.dispose();
});

test('mixlora convert --format bin and back gives the same tensors; bad usage is refused', async () => {
  const { model } = loadModel(STORIES_BIN, { tokenizer: STORIES_TOK });
  T.manualSeed(2);
  const a = Adapter.create(
    'lora',
    parseAdapterConfig({ peft_type: 'LORA', r: 4, lora_alpha: 8, target_modules: ALL, lora_dropout: 0 }, 't'),
    model,
  );
  const root = tempDir();
  const src = path.join(root, 'src');
  saveAdapter(src, a, { baseModel: STORIES_BIN });
  a.dispose();
  model.dispose();
  const toBin = mixlora(['convert', '--adapter', src, '--format', 'bin', '--out', path.join(root, 'bin')]);
  assert.equal(toBin.code, 0, toBin.stderr);
  assert.deepEqual(fs.readdirSync(path.join(root, 'bin')).sort(), ['adapter_config.json', 'adapter_model.bin']);
  assert.equal(
    fs.readFileSync(path.join(root, 'bin', 'adapter_config.json'), 'utf8'),
    fs.readFileSync(path.join(src, 'adapter_config.json'), 'utf8'),
  );
  const r = JSON.parse(
    runPython(COMPARE, [path.join(root, 'bin', 'adapter_model.bin'), path.join(src, 'adapter_model.safetensors')]),
  ) as { same_keys: boolean; mismatch: string[]; keys: string[] };
  assert.equal(r.same_keys, true);
  assert.deepEqual(r.mismatch, []);
  assert.ok(r.keys.includes('base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight'));
  const toSt = mixlora([
    'convert',
    '--adapter',
    path.join(root, 'bin'),
    '--format',
    'safetensors',
    '--out',
    path.join(root, 'st'),
  ]);
  assert.equal(toSt.code, 0, toSt.stderr);
  assert.deepEqual(
    fs.readFileSync(path.join(root, 'st', 'adapter_model.safetensors')),
    fs.readFileSync(path.join(src, 'adapter_model.safetensors')),
  );
  // The output folder is never replaced without --force; --format without --adapter is bad usage.
  const again = mixlora(['convert', '--adapter', src, '--format', 'bin', '--out', path.join(root, 'bin')]);
  assert.equal(again.code, 1);
  assert.match(again.stderr, /already exists/);
  const usage = mixlora(['convert', '--format', 'bin', '--out', path.join(root, 'x')]);
  assert.equal(usage.code, 2);
  assert.match(usage.stderr, /--format needs --adapter/);
  const missing = mixlora([
    'convert',
    '--adapter',
    path.join(root, 'bin'),
    '--format',
    'bin',
    '--out',
    path.join(root, 'y'),
  ]);
  assert.equal(missing.code, 1);
  assert.match(missing.stderr, /no adapter_model\.safetensors to convert/);
});

test('save_formats: [safetensors, bin] in a training config writes both files', async () => {
  const data = commonsenseSlice('boolq.train', 4);
  const { file } = writeConfig({
    save_formats: ['safetensors', 'bin'],
    cutoff_len: 256,
    adapters: [
      {
        name: 'a',
        data,
        adapter: { peft_type: 'LORA', r: 2, lora_alpha: 4, target_modules: ['q_proj'] },
        batch_size: 2,
        max_steps: 1,
      },
    ],
  });
  const cfg = readTrainConfig(file);
  const r = await train(cfg);
  const dir = r.outputs.a!;
  assert.deepEqual(fs.readdirSync(dir).sort(), [
    'adapter_config.json',
    'adapter_model.bin',
    'adapter_model.safetensors',
  ]);
  const res = JSON.parse(
    runPython(COMPARE, [path.join(dir, 'adapter_model.bin'), path.join(dir, 'adapter_model.safetensors')]),
  ) as { same_keys: boolean; mismatch: string[] };
  assert.equal(res.same_keys, true);
  assert.deepEqual(res.mismatch, []);
  const bad = writeConfig({
    save_formats: ['pt'],
    adapters: cfg.adapters.map((a) => ({ name: a.name, data, adapter: {} })),
  });
  assert.throws(() => readTrainConfig(bad.file), /save_formats.*'pt'.*safetensors, bin/);
});
