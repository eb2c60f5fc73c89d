// Prefill and decode throughput of a LLaMA-shaped model (vocab 32000, hidden 512, 8 layers, random
// weights, float32), against PyTorch eager doing the same in this invocation.
//   node dist/bench/models.js [--json]
import * as T from '../src/tensor/index.js';
import { llamaConfig, randomModel } from '../src/models/random.js';
import { KVCache } from '../src/models/kvcache.js';
import { medianMs, runPython, table, threads, machine, type Row } from './harness.js';

const SHAPE = { vocab: 32000, hidden: 512, intermediate: 1376, layers: 8, heads: 8 };
const PREFILL = { batch: 4, tokens: 256 };
const DECODE = { prompt: 32, newTokens: 64 };

export interface ModelsResult {
  prefillTokensPerS: number;
  decodeTokensPerS: number;
}

function measure(): ModelsResult {
  const model = randomModel(llamaConfig(SHAPE), { seed: 0 });
  T.manualSeed(1);
  const ids = T.randint(0, SHAPE.vocab, [PREFILL.batch, PREFILL.tokens]).keep();
  const prefillMs = medianMs(
    () =>
      T.noGrad(() =>
        T.tidy(() => {
          model.forward(ids);
        }),
      ),
    5,
    1,
  );
  const prompt = T.randint(0, SHAPE.vocab, [1, DECODE.prompt]).keep();
  const decodeMs = medianMs(
    () =>
      T.noGrad(() => {
        const cache = new KVCache(model.config, 1, DECODE.prompt + DECODE.newTokens, 'float32', 'cpu');
        let next = T.tidy(() => model.forward(prompt, { cache, lastOnly: true }).argmax(-1).keep()); // [1, 1]
        for (let i = 1; i < DECODE.newTokens; i++) {
          const prev = next;
          next = T.tidy(() => model.forward(prev, { cache, lastOnly: true }).argmax(-1).keep());
          prev.dispose();
        }
        next.dispose();
        cache.dispose();
      }),
    3,
    1,
  );
  ids.dispose();
  prompt.dispose();
  model.dispose();
  return {
    prefillTokensPerS: (PREFILL.batch * PREFILL.tokens) / (prefillMs / 1000),
    // Decode time includes the prompt's prefill, as in generation; tokens counted are the new ones.
    decodeTokensPerS: DECODE.newTokens / (decodeMs / 1000),
  };
}

export function runModelsBench(): { ours: ModelsResult; torch: ModelsResult; rows: Row[] } {
  const ours = measure();
  const torch = runPython<ModelsResult>('models.py', [
    '--threads',
    String(threads()),
    '--config',
    JSON.stringify({ ...SHAPE, prefill: PREFILL, decode: DECODE }),
  ]);
  const rows: Row[] = [
    {
      name: `prefill ${PREFILL.batch}×${PREFILL.tokens} tokens`,
      ours: ours.prefillTokensPerS,
      torch: torch.prefillTokensPerS,
      unit: 'tokens/s',
    },
    {
      name: `decode ${DECODE.newTokens} tokens after a ${DECODE.prompt}-token prompt, KV cache`,
      ours: ours.decodeTokensPerS,
      torch: torch.decodeTokensPerS,
      unit: 'tokens/s',
    },
  ];
  return { ours, torch, rows };
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const r = runModelsBench();
  if (process.argv.includes('--json')) console.log(JSON.stringify({ ours: r.ours, torch: r.torch }));
  else
    console.log(
      `LLaMA-shaped model, vocab 32000, hidden 512, 8 layers (${machine()}); higher is better\n\n${table(r.rows)}`,
    );
}
