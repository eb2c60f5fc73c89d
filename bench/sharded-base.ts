// A frozen base sharded across ranks (shard_base) against plain data parallelism, both with two ranks on
// this machine: `mixlora launch --nproc-per-node 2 bench --preset llama-1b --method lora --recompute`, with
// and without --shard-base, and with --shard-base --shard-optimizer. Reported from rank 0: the frozen base's
// bytes it holds (base_mib), its peak resident memory, the step time and the time in collectives (the gradient
// sums; sharded, the gathers too); then the --plan table for LLaMA-2 7B, 13B and 70B, which the measured llama-1b shares check.
//   node dist/bench/sharded-base.js            prints the Markdown section
//   node dist/bench/sharded-base.js --write    also puts it into BENCHMARKS.md (replacing its "## Sharded base")
import { PRESETS } from '../src/bench/benchmark.js';
import { shardPlan } from '../src/bench/shard-plan.js';
import { llamaConfig } from '../src/models/random.js';
import { fmt, machine, mixloraJson, writeBenchmarksSection } from './harness.js';

interface Run {
  ms_per_step: number;
  collective_ms_per_step: number | null;
  peak_rss_mib: number;
  base_mib: number;
  trainable_parameters: number;
}

const bench = (args: string[]) => mixloraJson<Run>(args);

/** The mean of each figure over runs of one configuration. */
function meanRun(runs: Run[]): Run {
  const mean = (f: (r: Run) => number) => runs.reduce((n, r) => n + f(r), 0) / runs.length;
  return {
    ms_per_step: mean((r) => r.ms_per_step),
    collective_ms_per_step: mean((r) => r.collective_ms_per_step ?? 0),
    peak_rss_mib: mean((r) => r.peak_rss_mib),
    base_mib: mean((r) => r.base_mib),
    trainable_parameters: runs[0]!.trainable_parameters,
  };
}

const GIB = 2 ** 30;

export function runShardedBaseBench(): string {
  const common = ['launch', '--oversubscribe', '--nproc-per-node', '2', 'bench', '--preset', 'llama-1b'];
  const step = ['--method', 'lora', '--recompute', '--steps', '2', '--warmup', '1', '--threads', '1', '--json'];
  const configs = [[], ['--shard-base'], ['--shard-base', '--shard-optimizer']];
  // Each configuration twice, alternating: step times on a shared 2-core machine swing between runs.
  const runs = configs.map((): Run[] => []);
  for (let round = 0; round < 2; round++)
    configs.forEach((extra, i) => runs[i]!.push(bench([...common, ...step, ...extra])));
  const [plain, sharded, both] = runs.map(meanRun) as [Run, Run, Run];
  const planned = shardPlan(llamaConfig(PRESETS['llama-1b']), 'bfloat16', null, [2]).rows[0]!;
  const row = (name: string, i: number) => {
    const [a, b] = runs[i]! as [Run, Run];
    const two = (f: (r: Run) => number) => `${fmt(f(a))}, ${fmt(f(b))}`;
    return `| ${name} | ${fmt(a.base_mib)} | ${two((r) => r.peak_rss_mib)} | ${two((r) => r.ms_per_step)} | ${two((r) => r.collective_ms_per_step ?? 0)} |`;
  };
  const plans = (['llama2-7b', 'llama2-13b', 'llama2-70b'] as const).flatMap((name) =>
    ([null, 'nf4'] as const).map((q) => {
      const plan = shardPlan(llamaConfig(PRESETS[name]), 'bfloat16', q, [1, 2, 4, 8]);
      const cells = plan.rows.map(
        (r) => `${(r.perRankBytes / GIB).toFixed(2)} + ${(r.gatheredBytes / GIB).toFixed(2)}`,
      );
      return `| ${name}, ${q ?? 'bfloat16'} | ${cells.join(' | ')} |`;
    }),
  );
  return `## Sharded base (\`shard_base\`, \`bench/sharded-base.ts\`); ${new Date().toISOString().slice(0, 10)}, ${machine()}

Two ranks on this machine (1 thread each), each training LoRA (r 80, ${plain.trainable_parameters.toLocaleString('en-US')} trainable
parameters, AdamW) on \`--preset llama-1b\` (TinyLlama-1.1B's shapes, bfloat16 weights, 2 × 64 tokens per rank)
with \`--recompute\`, the frozen base whole on each rank (plain data parallelism) or sharded
(\`bin/mixlora launch --nproc-per-node 2 bench --preset llama-1b --method lora --recompute --shard-base\`), and
sharded with the AdamW state sharded too (\`--shard-optimizer\`, ZeRO stage 1); rank 0's figures, each configuration
run twice, alternating (the ratios below are of the means):

| run | frozen base held, MiB | peak RSS, MiB (two runs) | ms/step (two runs) | ms/step in collectives (two runs) |
|---|---:|---:|---:|---:|
${row('2 ranks, whole base', 0)}
${row('2 ranks, shard_base', 1)}
${row('2 ranks, shard_base + shard_optimizer', 2)}

Sharded against whole: the base held ${(sharded.base_mib / plain.base_mib).toFixed(2)}× (the plan: ${fmt(planned.perRankBytes / 2 ** 20)} MiB), the
peak ${(sharded.peak_rss_mib / plain.peak_rss_mib).toFixed(2)}× (the adapter's weights, gradients and AdamW moments, about ${fmt((plain.trainable_parameters * 16) / 2 ** 20)} MiB, are
whole on each rank), the step ${(sharded.ms_per_step / plain.ms_per_step).toFixed(2)}×: each layer is all-gathered twice a step (forward, and its
recomputed backward) over Gloo on the loopback, the next while the current one computes. With the optimizer
state sharded as well: the peak ${(both.peak_rss_mib / plain.peak_rss_mib).toFixed(2)}×, the step ${(both.ms_per_step / plain.ms_per_step).toFixed(2)}× (each rank keeps the moments of half
the parameters, about ${fmt((plain.trainable_parameters * 4) / 2 ** 20)} MiB less, and the weights are all-reduced once more a step).
On a 2-core machine shared by two ranks the same run's step time differs by up to a quarter from one run to the
next (the kernel's share, page faults and loopback copies, swings); the memory figures hold.

\`bin/mixlora bench --preset NAME [--quantize nf4] --shard-base --plan\`: GiB per rank held between uses + the
units whole at once (the one that runs, and the next, gathered ahead), computed from the shapes; activations, adapters and optimizer
state come on top:

| base | 1 rank | 2 ranks | 4 ranks | 8 ranks |
|---|---:|---:|---:|---:|
${plans.join('\n')}
`;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const markdown = runShardedBaseBench();
  if (process.argv.includes('--write')) writeBenchmarksSection('## Sharded base', markdown);
  process.stdout.write(markdown);
}
