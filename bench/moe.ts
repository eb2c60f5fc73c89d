// The MixLoRA block (router + 8 LoRA experts over the frozen SwiGLU FFN, top-2, r 16) forward+backward
// on 4×256 tokens at hidden 512: the efficient expert path (frozen gate/up/down once per token) against
// the per-expert path, and against the reference-style block in PyTorch eager.
//   node dist/bench/moe.js [--json]
import * as T from '../src/tensor/index.js';
import { llamaConfig, randomModel } from '../src/models/random.js';
import { Adapter } from '../src/adapters/adapter.js';
import { parseAdapterConfig } from '../src/adapters/config.js';
import { moeForward } from '../src/adapters/moe.js';
import { linear } from '../src/tensor/ops.js';
import { medianMs, runPython, threads, machine, fmt } from './harness.js';

const SHAPE = { vocab: 32000, hidden: 512, intermediate: 1376, layers: 1, heads: 8 };
const TOKENS = 4 * 256;
const MOE = { num_experts: 8, top_k: 2, r: 16, lora_alpha: 32 };

export interface MoeBenchResult {
  efficientMs: number;
  perExpertMs: number;
  torchReferenceMs: number;
}

export function runMoeBench(): MoeBenchResult {
  const model = randomModel(llamaConfig(SHAPE), { seed: 0 });
  const adapter = Adapter.create(
    'bench',
    parseAdapterConfig(
      {
        peft_type: 'MIXLORA',
        lora_dropout: 0,
        target_modules: ['gate_proj', 'up_proj', 'down_proj'],
        routing_strategy: 'mixlora',
        ...MOE,
      },
      'bench',
    ),
    model,
  ).requiresGrad_();
  T.noGrad(() => {
    for (const p of adapter.parameters()) if (p.name.includes('lora_B')) p.tensor.normal_(0, 0.01);
  });
  const w = model.weights.layers[0]!;
  const moe = adapter.layers[0]!.moe!;
  T.manualSeed(1);
  const x = T.randn([TOKENS, SHAPE.hidden]).keep().requiresGrad_();
  const step = (efficient: boolean) =>
    T.tidy(() => {
      const base = efficient
        ? { gate: linear(x, w.proj.gate_proj!.weight), up: linear(x, w.proj.up_proj!.weight), fused: null }
        : null;
      const { out } = moeForward(moe, w, {
        x,
        rows: 4,
        len: 256,
        valid: null,
        base,
        act: 'silu',
        training: true,
        efficient,
      });
      out.sum().backward();
      T.zeroGrad([x, ...adapter.parameters().map((p) => p.tensor)]);
    });
  const efficientMs = medianMs(() => step(true), 7, 2);
  const perExpertMs = medianMs(() => step(false), 7, 2);
  x.dispose();
  adapter.dispose();
  model.dispose();
  const torch = runPython<{ referenceMs: number }>('moe.py', [
    '--threads',
    String(threads()),
    '--tokens',
    String(TOKENS),
    '--hidden',
    String(SHAPE.hidden),
    '--intermediate',
    String(SHAPE.intermediate),
    '--experts',
    String(MOE.num_experts),
    '--top-k',
    String(MOE.top_k),
    '--rank',
    String(MOE.r),
  ]);
  return { efficientMs, perExpertMs, torchReferenceMs: torch.referenceMs };
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const r = runMoeBench();
  if (process.argv.includes('--json')) console.log(JSON.stringify(r));
  else {
    console.log(`MixLoRA block fwd+bwd, ${TOKENS} tokens, hidden 512, 8 experts top-2, r 16 (${machine()})\n`);
    console.log('| path | ms | vs per-expert |\n|---|---:|---:|');
    console.log(
      `| mixlora efficient (frozen projections once per token) | ${fmt(r.efficientMs)} | ${(r.perExpertMs / r.efficientMs).toFixed(2)}× faster |`,
    );
    console.log(`| mixlora per-expert | ${fmt(r.perExpertMs)} | 1.00× |`);
    console.log(
      `| PyTorch eager, reference-style per-expert block | ${fmt(r.torchReferenceMs)} | ${(r.perExpertMs / r.torchReferenceMs).toFixed(2)}× |`,
    );
  }
}
