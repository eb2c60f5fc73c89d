// The serving engine on the tiny Gemma 2 and Phi-3 folders (test/reference/families.py): per-row KV caches,
// rows that join a running batch, Gemma 2's alternating sliding window (4 positions) and soft-caps, Phi-3's
// window of 6, each shorter than prompt + generated tokens. Greedy tokens equal transformers' generate()
// for the same prompts (the fixture's gen_greedy), for the prompts sent together (prefilled together,
// left-padded) and one after the other.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { referenceDir } from '../helpers/fixtures.js';
import { openModel } from '../helpers/reference-adapters.js';
import { transformersExpected } from '../helpers/reference-libraries.js';
import { Engine, type SequenceSpec } from '../../src/serve/engine.js';
import { ServerMetrics } from '../../src/serve/metrics.js';

function prompts(name: string): { prompts: number[][]; expected: number[][] } {
  const e = transformersExpected(name);
  const L = e.get('gen_prompts')!.size(1);
  const ids = e.get('gen_prompts')!.toNumbers();
  const mask = e.get('gen_prompt_mask')!.toNumbers();
  const greedy = e.get('gen_greedy')!;
  const n = greedy.size(1);
  const out = greedy.toNumbers();
  const B = greedy.size(0);
  const result = {
    prompts: Array.from({ length: B }, (_, b) => ids.slice(b * L, (b + 1) * L).filter((_, t) => mask[b * L + t] === 1)),
    expected: Array.from({ length: B }, (_, b) => out.slice(b * n, (b + 1) * n)),
  };
  for (const t of e.values()) t.dispose();
  return result;
}

/** Runs one prompt through the engine; resolves with its greedy tokens. */
function serve(engine: Engine, prompt: number[], maxTokens: number): Promise<number[]> {
  return new Promise((resolve, reject) => {
    const tokens: number[] = [];
    const spec: SequenceSpec = {
      prompt,
      maxTokens,
      modelName: 'base',
      adapter: null,
      sampling: { temperature: 0, topP: null, topK: null, seed: null, logprobs: null },
      sink: {
        onToken: (c) => (tokens.push(c.id), false),
        onFinish: (_reason, error) => (error ? reject(error) : resolve(tokens)),
      },
    };
    engine.submit([spec]);
  });
}

for (const name of ['gemma2-window-softcap', 'phi3-partial-rotary']) {
  test(`${name}: served greedy tokens equal transformers' generate(), together and staggered`, async () => {
    const model = openModel(referenceDir('models', name));
    const { prompts: ps, expected } = prompts(name);
    const n = expected[0]!.length;
    const engine = new Engine(model, { maxBatch: 4, maxQueue: 8, stopIds: [], metrics: new ServerMetrics() });
    assert.deepEqual(await Promise.all(ps.map((p) => serve(engine, p, n))), expected, 'sent together');
    assert.ok(engine.peakBatch >= 2, 'the prompts sent together shared decode steps');
    assert.ok(
      engine.peakPrefill >= 2,
      'the prompts sent together (of different lengths) were prefilled in one forward',
    );
    // The second prompt joins while the first is decoding: rows of different lengths share steps.
    const first = serve(engine, ps[0]!, n);
    await new Promise((r) => setTimeout(r, 5));
    const second = serve(engine, ps[1]!, n);
    assert.deepEqual(await Promise.all([first, second]), expected, 'staggered');
    await engine.shutdown(1000);
    model.dispose();
  });
}
