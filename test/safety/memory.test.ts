// Issue 11, cases 5-9: small hostile inputs never exhaust memory. Each case runs in a child process
// under a limit, so a regression fails fast instead of taking the machine down:
//  - `ulimit -v` (RLIMIT_AS) of 3 GiB for native allocations (libtorch, Buffers). Node + the libtorch
//    addon + stories260K reserve about 1.9 GiB of address space (V8 reserves much more than it uses),
//    so 3 GiB leaves about 1 GiB: the 16 GiB, 12.8 GB and 1.5 GiB allocations of the issue cannot happen.
//  - `--max-old-space-size` for the JavaScript heap (a billion-layer weight list, a 20 MB record
//    tokenised whole, a template's runaway loop).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { MIXLORA_BIN, ROOT, STORIES_BIN, STORIES_TOK, tempDir } from '../helpers/fixtures.js';
import { convertLlama2c } from '../../src/models/convert.js';

const ADDRESS_SPACE_KIB = 3 * 2 ** 20;

interface Limited {
  code: number | null;
  signal: string | null;
  stdout: string;
  stderr: string;
}

/** Runs `node <args>` under the address-space limit and a JS heap limit (MiB). */
function limitedNode(args: string[], heapMb = 512): Limited {
  const quoted = args.map((a) => `'${a.replace(/'/g, `'\\''`)}'`).join(' ');
  const r = spawnSync(
    'bash',
    ['-c', `ulimit -v ${ADDRESS_SPACE_KIB}; exec '${process.execPath}' --max-old-space-size=${heapMb} ${quoted}`],
    { encoding: 'utf8', env: { ...process.env, MIXLORA_NUM_THREADS: '1' }, timeout: 120_000 },
  );
  return { code: r.status, signal: r.signal, stdout: r.stdout, stderr: r.stderr };
}

/** One clear line and exit 1: a refusal, not a crash. */
function assertRefused(r: Limited, pattern: RegExp): void {
  assert.equal(r.code, 1, `exit ${r.code} ${r.signal ?? ''}: ${r.stderr.slice(-2000)}`);
  assert.match(r.stderr, pattern);
  assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
}

// A torch.save zip written without torch: fake `torch` modules let Python's pickle name torch's
// rebuild function and storage type exactly as torch.save does (protocol 2, persistent storage ids).
const WRITE_BIN = `
import sys, types, pickle, zipfile, collections, json
out, spec = sys.argv[1], json.loads(sys.argv[2])
torch = types.ModuleType('torch'); utils = types.ModuleType('torch._utils'); torch._utils = utils
sys.modules['torch'] = torch; sys.modules['torch._utils'] = utils
class FloatStorage: pass
FloatStorage.__module__ = 'torch'; torch.FloatStorage = FloatStorage
def _rebuild_tensor_v2(*a): pass
_rebuild_tensor_v2.__module__ = 'torch._utils'; utils._rebuild_tensor_v2 = _rebuild_tensor_v2
class Storage:
    def __init__(self, key, numel): self.key, self.numel = key, numel
class Tensor:
    def __init__(self, storage, shape, stride): self.s, self.shape, self.stride = storage, shape, stride
    def __reduce__(self): return (_rebuild_tensor_v2, (self.s, 0, tuple(self.shape), tuple(self.stride), False, collections.OrderedDict()))
class P(pickle.Pickler):
    def persistent_id(self, o):
        return ('storage', FloatStorage, o.key, 'cpu', o.numel) if isinstance(o, Storage) else None
import io
buf = io.BytesIO()
d = collections.OrderedDict((name, Tensor(Storage(str(i), t['numel']), t['shape'], t['stride'])) for i, (name, t) in enumerate(spec.items()))
P(buf, protocol=2).dump(d)
with zipfile.ZipFile(out, 'w', compression=zipfile.ZIP_DEFLATED, compresslevel=1) as z:
    z.writestr('archive/data.pkl', buf.getvalue())
    z.writestr('archive/version', '3\\n')
    for i, t in enumerate(spec.values()):
        with z.open('archive/data/%d' % i, 'w', force_zip64=True) as f:
            left = 4 * t['numel']
            chunk = bytes(16 * 2**20)
            while left > 0:
                n = min(left, len(chunk)); f.write(chunk[:n]); left -= n
`;

function hostileAdapter(spec: Record<string, { numel: number; shape: number[]; stride: number[] }>): string {
  const dir = tempDir();
  fs.writeFileSync(
    path.join(dir, 'adapter_config.json'),
    JSON.stringify({ peft_type: 'LORA', r: 2, lora_alpha: 4, target_modules: ['q_proj'] }),
  );
  const r = spawnSync('python3', ['-c', WRITE_BIN, path.join(dir, 'adapter_model.bin'), JSON.stringify(spec)], {
    encoding: 'utf8',
  });
  assert.equal(r.status, 0, r.stderr);
  return dir;
}

const generateWith = (extra: string[]) => [
  MIXLORA_BIN,
  'generate',
  '--model',
  STORIES_BIN,
  '--tokenizer',
  STORIES_TOK,
  '--prompt',
  'Once',
  ...extra,
];

test('case 5: a stride-0 view of a 45 KB .bin is refused before allocating its 16 GiB', () => {
  const key = 'base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight';
  const dir = hostileAdapter({ [key]: { numel: 1, shape: [65536, 65536], stride: [0, 0] } });
  assert.ok(fs.statSync(path.join(dir, 'adapter_model.bin')).size < 100_000);
  const r = limitedNode(generateWith(['--adapter', dir, '--max-new-tokens', '1']));
  assertRefused(
    r,
    /adapter_model\.bin: tensor '.*q_proj\.lora_A\.weight' of shape \[65536, 65536\] has more elements than its storage/,
  );
});

test('case 5: a small .bin whose storage inflates to 1.5 GiB is refused before inflating', () => {
  const key = 'base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight';
  const numel = 384 * 2 ** 20; // 1.5 GiB of float32 zeros, a couple of MB deflated
  const dir = hostileAdapter({ [key]: { numel, shape: [2, 64], stride: [64, 1] } });
  assert.ok(fs.statSync(path.join(dir, 'adapter_model.bin')).size < 10 * 2 ** 20);
  const r = limitedNode(generateWith(['--adapter', dir, '--max-new-tokens', '1']));
  assertRefused(r, /adapter_model\.bin: its storages hold more than \d+ elements, more than the adapter's parameters/);
});

test('case 6: --max-new-tokens 10000000 or 1e12 is capped at the context, the cache grows as needed', () => {
  for (const n of ['10000000', String(1e12)]) {
    const r = limitedNode(generateWith(['--max-new-tokens', n, '--json']));
    assert.equal(r.code, 0, `exit ${r.code} ${r.signal ?? ''}: ${r.stderr.slice(-2000)}`);
    assert.match(r.stderr, new RegExp(`--max-new-tokens ${n} capped to \\d+: the model's context is 512 positions`));
    assert.equal(JSON.parse(r.stdout).completions.length, 1);
  }
});

test('case 7: config.json with num_hidden_layers 1e9 is refused against the weights file at once', () => {
  const dir = path.join(tempDir(), 'hf');
  convertLlama2c(STORIES_BIN, STORIES_TOK, dir);
  const cfgFile = path.join(dir, 'config.json');
  fs.writeFileSync(
    cfgFile,
    JSON.stringify({ ...JSON.parse(fs.readFileSync(cfgFile, 'utf8')), num_hidden_layers: 1e9 }),
  );
  // 64 MiB of JS heap: listing a billion layers' tensors would need hundreds of GB.
  const r = limitedNode([MIXLORA_BIN, 'generate', '--model', dir, '--prompt', 'Once', '--max-new-tokens', '1'], 64);
  assertRefused(
    r,
    /has no tensor 'model\.layers\.5\.input_layernorm\.weight' \(.*config\.json: num_hidden_layers 1000000000 needs \d+ tensors, the checkpoint holds \d+\)/,
  );
});

test('case 8: a 20 MB training record is cut before tokenising (bounded work per record)', () => {
  const dir = tempDir();
  const data = path.join(dir, 'data.jsonl');
  const huge = 'Once upon a time there was a cat. '.repeat(600_000); // ~20 MB
  fs.writeFileSync(
    data,
    JSON.stringify({ instruction: 'Tell a story.', output: huge }) +
      '\n' +
      JSON.stringify({ instruction: 'Hi', output: 'there' }) +
      '\n',
  );
  const script = `
    import { TextTokenizer } from '${path.join(ROOT, 'dist/src/tokenizer/tokenizer.js')}';
    import { loadExamples } from '${path.join(ROOT, 'dist/src/data/examples.js')}';
    const tok = TextTokenizer.fromLlama2c(${JSON.stringify(STORIES_TOK)}, 512);
    const { examples, stats } = loadExamples(${JSON.stringify(data)}, tok, { template: 'none', trainOnInputs: false, cutoffLen: 64, vocabSize: 512 });
    console.log(JSON.stringify({ lengths: examples.map((e) => e.inputIds.length), truncated: stats.truncated }));
  `;
  // 256 MiB of heap: the record itself fits; tokenising it whole does not.
  const r = limitedNode(['--input-type=module', '-e', script], 256);
  assert.equal(r.code, 0, `exit ${r.code} ${r.signal ?? ''}: ${r.stderr.slice(-2000)}`);
  const out = JSON.parse(r.stdout) as { lengths: number[]; truncated: number };
  assert.equal(out.lengths.length, 2);
  assert.equal(out.lengths[0], 64);
  assert.equal(out.truncated, 1);
});

test('case 9: a chat template with a runaway loop or output is stopped, naming the template', () => {
  const dir = tempDir();
  const script = (template: string) => `
    import fs from 'node:fs';
    import { TextTokenizer } from '${path.join(ROOT, 'dist/src/tokenizer/tokenizer.js')}';
    const base = TextTokenizer.fromLlama2c(${JSON.stringify(STORIES_TOK)}, 512);
    fs.writeFileSync(${JSON.stringify(path.join(dir, 'tokenizer.json'))}, JSON.stringify(base.tokenizerJson));
    fs.writeFileSync(${JSON.stringify(path.join(dir, 'tokenizer_config.json'))}, JSON.stringify({ chat_template: ${JSON.stringify(template)} }));
    const tok = TextTokenizer.fromDir(${JSON.stringify(dir)});
    try { tok.applyChatTemplate([{ role: 'user', content: 'hi' }]); console.log('rendered'); }
    catch (e) { console.error(e.name + ': ' + e.message); process.exit(1); }
  `;
  for (const template of [
    '{% for i in range(1000000000) %}{{ messages[0].content }}{% endfor %}', // output
    '{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}', // time
  ]) {
    const r = limitedNode(['--input-type=module', '-e', script(template)], 256);
    assertRefused(
      r,
      /UserError: .*tokenizer\.json: chat_template \(tokenizer_config\.json\): (rendering did not finish within|its output is longer than|rendering needed more than)/,
    );
  }
});

test('case 6: a KV cache that grows step by step gives exactly the logits of one reserved up front', async () => {
  const T = await import('../../src/tensor/index.js');
  const { KVCache } = await import('../../src/models/kvcache.js');
  const { loadModel } = await import('../../src/models/load.js');
  const { model } = loadModel(STORIES_BIN, { tokenizer: STORIES_TOK });
  T.noGrad(() =>
    T.tidy(() => {
      const ids = T.tensor([[1, 403, 407, 261, 5, 9, 77, 300, 12, 44, 91, 2]], { dtype: 'int64' }); // [1, 12]
      const decode = (initial: number) => {
        const cache = new KVCache(model.config, 1, 12, 'float32', 'cpu', { initial });
        const out = [model.forward(ids.narrow(1, 0, 3), { cache })]; // [1, 3, V]
        for (let t = 3; t < 12; t++) out.push(model.forward(ids.narrow(1, t, 1), { cache })); // [1, 1, V]
        const capacity = cache.capacity;
        cache.dispose();
        return { logits: T.cat(out, 1), capacity }; // [1, 12, V]
      };
      const grown = decode(1); // 1 -> 3 -> 6 -> 12
      const reserved = decode(12);
      assert.equal(grown.capacity, 12);
      assert.equal(grown.logits.sub(reserved.logits).abs().amax().item(), 0);
      // And both equal a full forward pass (float32 rounding: logits are up to ~20).
      assert.ok(grown.logits.sub(model.forward(ids)).abs().amax().item() < 1e-4);
    }),
  );
  model.dispose();
});
