// What several adapters over one base cost in memory (issue 31): two MixLoRA adapters trained fused over
// one copy of `--preset llama-1b` (TinyLlama-1.1B's shapes, bfloat16 base, 2 × 64 tokens a step, recompute)
// against two separate runs, with the optimizer as usual (AdamW, float32 moments, the step after the pass)
// and with the memory options (8-bit AdamW moments, the optimizer step in the backward pass), under
// mixlora's malloc settings (native/bindings/host_allocator.cc: freed memory kept for the next step) and under
// glibc's defaults (MIXLORA_MALLOC=default). Each configuration is its own process (peak resident set).
//   node dist/bench/adapter-memory.js            prints the Markdown section
//   node dist/bench/adapter-memory.js --write    also puts it into BENCHMARKS.md ("## Adapter memory")
import { fmt, machine, writeBenchmarksSection } from './harness.js';
import { ours, type StepRun } from './training.js';

const STEPS = Number(process.env.BENCH_MEMORY_STEPS ?? 2);
const PRESETS = (process.env.BENCH_MEMORY_PRESETS ?? 'llama-1b').split(',');
const TIME_ROUNDS = Number(process.env.BENCH_MEMORY_TIME_ROUNDS ?? 3);

interface Setting {
  label: string;
  extra: string[];
  env: Record<string, string>;
}

const SETTINGS: Setting[] = [
  { label: 'AdamW', extra: [], env: {} },
  { label: 'AdamW, glibc malloc', extra: [], env: { MIXLORA_MALLOC: 'default' } },
  { label: '8-bit AdamW + step in backward', extra: ['--optimizer', 'adamw8bit', '--optimizer-in-backward'], env: {} },
  {
    label: '8-bit AdamW + step in backward, glibc malloc',
    extra: ['--optimizer', 'adamw8bit', '--optimizer-in-backward'],
    env: { MIXLORA_MALLOC: 'default' },
  },
];

function run(preset: string, s: Setting, fused: number): StepRun & { base_mib: number } {
  process.stderr.write(`${preset}: ${s.label}, ${fused} adapter(s)\n`);
  return ours('mixlora', {
    fused,
    steps: STEPS,
    warmup: 1,
    extra: ['--preset', preset, '--recompute', ...s.extra],
    env: s.env,
  }) as StepRun & { base_mib: number };
}

export function runAdapterMemoryBench(): string {
  const rows: string[] = [];
  for (const preset of PRESETS) {
    for (const s of SETTINGS) {
      const one = run(preset, s, 1);
      const two = run(preset, s, 2);
      rows.push(
        `| ${preset} | ${s.label} | ${fmt(one.base_mib)} | ${fmt(one.peak_rss_mib)} | ${fmt(two.peak_rss_mib)} | ` +
          `${fmt(2 * one.peak_rss_mib)} | ${(two.peak_rss_mib / (2 * one.peak_rss_mib)).toFixed(3)}× |`,
      );
    }
  }
  // What the options cost in time: one adapter's step on the smaller preset, interleaved rounds, the fastest kept.
  const timed = [SETTINGS[0]!, SETTINGS[2]!];
  const best = timed.map(() => Infinity);
  for (let round = 0; round < TIME_ROUNDS; round++) {
    timed.forEach((s, i) => {
      process.stderr.write(`llama-58m timing, round ${round + 1}: ${s.label}\n`);
      const r = ours('mixlora', { steps: 3, warmup: 1, extra: ['--preset', 'llama-58m', '--recompute', ...s.extra] });
      best[i] = Math.min(best[i]!, r.ms_per_step);
    });
  }
  return `## Adapter memory (\`bench/adapter-memory.ts\`); ${new Date().toISOString().slice(0, 10)}, ${machine()}

Two MixLoRA adapters (r 16, 8 experts, top-2, on q,k,v,o,gate,up,down) trained fused over one copy of the base
against two separate runs (\`mixlora bench --method mixlora --recompute --fused 1|2\`, ${STEPS} timed steps after 1
warm-up; random weights; peak resident set of each process). \`llama-1b\` is TinyLlama-1.1B's shapes with a
bfloat16 base, 2 × 64 tokens per adapter, where the base dominates memory as it does for the paper's 7B model.
The memory options: \`optimizer: adamw8bit\` (bitsandbytes-style 8-bit blockwise moments) and
\`optimizer_in_backward: true\` (each layer's update right after its recomputed backward, its gradients freed);
their weights equal the usual step's bit for bit for the second, and follow AdamW's closely for the first
(docs/training-config.md). "glibc malloc" is \`MIXLORA_MALLOC=default\`: glibc's own thresholds, which return
freed blocks to the system, instead of mixlora's, which keep them for the next step (faster steps, a higher
peak when the sizes of the blocks change from step to step).

| preset | optimizer | base MiB | 1 adapter MiB | 2 fused MiB | 2 runs MiB | fused / 2 runs |
|---|---|---:|---:|---:|---:|---:|
${rows.join('\n')}

What the memory options cost: one MixLoRA adapter's step on \`--preset llama-58m\` (float32, 4 × 256 tokens,
recompute), the fastest of ${TIME_ROUNDS} interleaved rounds: AdamW ${fmt(best[0]!)} ms, 8-bit AdamW with the step in the
backward pass ${fmt(best[1]!)} ms (${(best[1]! / best[0]!).toFixed(2)}×).
`;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const md = runAdapterMemoryBench();
  process.stdout.write(md);
  if (process.argv.includes('--write')) writeBenchmarksSection('## Adapter memory', md);
}
