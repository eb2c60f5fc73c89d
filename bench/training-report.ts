// The Markdown of the training-step benchmarks (bench/training.ts): the comparison table, the targets
// of issue 13, mixed precision, memory, and the op-family profile of one step.
import type { StepProfile } from '../src/bench/step-profile.js';
import { fmt } from './harness.js';
import { METHODS, NAMES, ROUNDS, SCORED, STEPS, WARMUP, probeShare, type TrainingResults } from './training.js';

const x = (v: number) => `${v.toFixed(2)}×`;
const pct = (v: number) => `${(v * 100).toFixed(0)}%`;

function profileTable(p: StepProfile, title: string): string {
  const rows = p.families.map((f) => `| ${f.family} | ${fmt(f.ms)} | ${pct(f.share)} |`);
  const top = p.ops
    .slice(0, 10)
    .map((o) => `\`${o.name}\` ${fmt(o.selfMs)} ms (${o.calls})`)
    .join(', ');
  return [
    `**${title}**: one step, ${fmt(p.wallMs)} ms with recording on.`,
    '',
    '| op family | ms | share |',
    '|---|---:|---:|',
    ...rows,
    '',
    `Top ops by self time (calls): ${top}.`,
  ].join('\n');
}

export function trainingSection(res: TrainingResults, probeGflopsFp32: number): string {
  const R = res.runs;
  const v = res.versions;
  const lora = R['ours:lora']!;
  const mix = R['ours:mixlora']!;
  const rows = METHODS.map((m) => {
    const o = R[`ours:${m}`]!;
    const e = R[`eager:${m}`]!;
    const hf = R[`hf:${m}`];
    const c = m === 'lora' || m === 'dora' ? res.compiled[m] : null;
    const compiled = c === null ? '—' : 'error' in c ? 'did not run¹' : fmt(c.ms_per_step);
    const best = hf ?? e;
    return (
      `| ${NAMES[m]} | ${fmt(o.ms_per_step)} | ${hf ? fmt(hf.ms_per_step) : '—'} | ${compiled} | ${fmt(e.ms_per_step)} | ` +
      `${x(o.ms_per_step / best.ms_per_step)} | ${pct(probeShare(m, o.ms_per_step, probeGflopsFp32))} | ` +
      `${fmt(o.peak_rss_mib)} | ${hf ? fmt(hf.peak_rss_mib) : '—'} | ${fmt(e.peak_rss_mib)} |`
    );
  });
  const compileErrors = (['lora', 'dora'] as const)
    .map((m) => res.compiled[m])
    .filter((c): c is { error: string } => 'error' in c)
    .map((c) => c.error);
  const fused = R['ours:mixlora×2']!;
  const rec = R['ours:mixlora-recompute']!;
  const fusedRec = R['ours:mixlora×2-recompute']!;
  const big = R['ours:1b-mixlora']!;
  const bigFused = R['ours:1b-mixlora×2']!;
  const sft = R['ours:mixlora-sft']!;
  const sftEager = R['eager:mixlora-sft']!;
  const shared = R['eager:mixlora-shared']!;
  const loraBf16 = R['ours:lora-bf16']!;
  const mixBf16 = R['ours:mixlora-bf16']!;
  const targets: [string, string, string, boolean][] = [
    [
      'LoRA step vs HF transformers + PEFT (eager)',
      x(lora.ms_per_step / R['hf:lora']!.ms_per_step),
      '≤ 0.8×',
      lora.ms_per_step / R['hf:lora']!.ms_per_step <= 0.8,
    ],
    [
      'MixLoRA step vs the eager MixLoRA reference',
      x(mix.ms_per_step / R['eager:mixlora']!.ms_per_step),
      '≤ 0.8×',
      mix.ms_per_step / R['eager:mixlora']!.ms_per_step <= 0.8,
    ],
    [
      'MixLoRA / LoRA step (paper: 1.55×)',
      x(mix.ms_per_step / lora.ms_per_step),
      '≤ 1.3×',
      mix.ms_per_step / lora.ms_per_step <= 1.3,
    ],
    [
      "LoRA's model + adapter FLOP/s vs the float32 matmul probe",
      pct(probeShare('lora', lora.ms_per_step, probeGflopsFp32)),
      '≥ 60%',
      probeShare('lora', lora.ms_per_step, probeGflopsFp32) >= 0.6,
    ],
    [
      'bfloat16 base: MixLoRA step speed-up over float32',
      x(mix.ms_per_step / mixBf16.ms_per_step),
      '≥ 2×',
      mix.ms_per_step / mixBf16.ms_per_step >= 2,
    ],
    [
      'two MixLoRA fused, peak memory vs two runs (llama-1b, bfloat16, recompute)',
      x(bigFused.peak_rss_mib / (2 * big.peak_rss_mib)),
      '≤ 0.65×',
      bigFused.peak_rss_mib / (2 * big.peak_rss_mib) <= 0.65,
    ],
    [
      'the same on llama-58m (float32, recompute)',
      x(fusedRec.peak_rss_mib / (2 * rec.peak_rss_mib)),
      '≤ 0.65×',
      fusedRec.peak_rss_mib / (2 * rec.peak_rss_mib) <= 0.65,
    ],
  ];
  return `## Training step (the paper's Table 5, on this CPU)

LLaMA-shaped model with random weights (\`--preset llama-58m\`: vocab 32000, hidden 512, intermediate 1376,
8 layers, 8 heads), float32, batch 4 × 256 tokens, AdamW, dropout 0, adapters on q,k,v,o,gate,up,down with
the paper's equal parameter budget. Median of ${STEPS} steps after ${WARMUP} warm-up steps, each configuration in its own
process, interleaved, ${ROUNDS} round(s): the fastest round's time, the median round's memory (peak resident set).
Baselines, run in the same invocation with the same threads:
- **HF + PEFT**: transformers ${v.transformers} \`LlamaForCausalLM\` (SDPA attention) with PEFT ${v.peft} LoRA/DoRA on PyTorch ${v.torch}
  (\`bench/python/hf_peft_step.py\`), eager and under \`torch.compile\` (Inductor; compilation in the warm-up);
  PEFT has no MixLoRA.
- **eager reference**: \`bench/python/train_step.py\`, an eager PyTorch model with the reference MixLoRA tools'
  expert block (each expert runs the frozen FFN on its rows), for all four methods.
- **% of probe**: the step's model FLOPs (frozen base forward + input-gradient backward, attention, and the
  adapters' own products: forward + input and weight gradients; \`src/bench/flops.ts\`) per second, as a
  share of the float32 matrix-product probe below (${fmt(probeGflopsFp32)} GFLOP/s).

| method | mixlora ms | HF + PEFT ms | HF + PEFT compiled ms | eager reference ms | mixlora / best eager | mixlora % of probe | mixlora MiB | HF + PEFT MiB | eager reference MiB |
|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|
${rows.join('\n')}
${compileErrors.length ? `\n¹ torch.compile: ${compileErrors[0]}\n` : ''}
"best eager" is HF + PEFT where PEFT has the method, else the eager reference.

Two MixLoRA adapters trained together over one copy of the base (\`--fused 2\`): ${fmt(fused.ms_per_token * 1000)} µs per token
against ${fmt(mix.ms_per_token * 1000)} µs for one adapter (${x(fused.ms_per_token / mix.ms_per_token)}); peak memory ${fmt(fused.peak_rss_mib)} MiB against ${fmt(2 * mix.peak_rss_mib)} MiB
for two separate runs (${x(fused.peak_rss_mib / (2 * mix.peak_rss_mib))}). With activation recomputation (\`--recompute\`): one adapter
${fmt(rec.ms_per_step)} ms/step and ${fmt(rec.peak_rss_mib)} MiB; two fused ${fmt(fusedRec.peak_rss_mib)} MiB against ${fmt(2 * rec.peak_rss_mib)} MiB
(${x(fusedRec.peak_rss_mib / (2 * rec.peak_rss_mib))}). On \`--preset llama-1b\` (TinyLlama-1.1B's shapes, bfloat16 base, 2 × 64 tokens, recompute),
where the base dominates as it does for the paper's 7B model: one MixLoRA adapter ${fmt(big.peak_rss_mib)} MiB, two fused
${fmt(bigFused.peak_rss_mib)} MiB against ${fmt(2 * big.peak_rss_mib)} MiB for two runs (${x(bigFused.peak_rss_mib / (2 * big.peak_rss_mib))}).

Instruction-tuning batch (the last ${SCORED} tokens of each row scored): mixlora computes the final norm and LM head
only where a token is scored. MixLoRA: ${fmt(sft.ms_per_step)} ms/step against ${fmt(sftEager.ms_per_step)} for the eager reference
(${x(sft.ms_per_step / sftEager.ms_per_step)}). The eager reference with its optional efficient operator (frozen gate/up once per token):
${fmt(shared.ms_per_step)} ms/step.

Mixed precision (\`--dtype bfloat16\`: frozen base, activations and their matmuls in bfloat16; adapter weights,
optimizer state, router and losses in float32): LoRA ${fmt(loraBf16.ms_per_step)} ms/step (${x(lora.ms_per_step / loraBf16.ms_per_step)} faster than
float32), MixLoRA ${fmt(mixBf16.ms_per_step)} ms/step (${x(mix.ms_per_step / mixBf16.ms_per_step)}).

### Targets (issue 13)

| measurement | measured | target | met |
|---|---:|---:|:---:|
${targets.map(([n, m, t, ok]) => `| ${n} | ${m} | ${t} | ${ok ? 'yes' : 'no'} |`).join('\n')}

### Where a step's time goes (\`mixlora bench --profile\`)

Each op's self time from libtorch's RecordFunction (\`native/bindings/profile.cc\`), grouped by name
(\`src/bench/step-profile.ts\`): autograd-node bookkeeping apart from the ops it calls; "host" is the wall
time outside every op (JavaScript, N-API, the tensor table, dispatch); the optimizer is its whole step.

${profileTable(res.profiles.mixlora, 'MixLoRA')}

${profileTable(res.profiles.lora, 'LoRA')}
`;
}
