// Data parallelism on this machine: `mixlora launch --nproc-per-node 2 bench` on the bench preset (MixLoRA,
// llama-58m), each rank running the whole batch and its gradients summed through Gloo; reported: the step
// time beside one process's, and the time per step spent in the collectives (rank 0's median).
//   node dist/bench/distributed.js            prints the Markdown section
//   node dist/bench/distributed.js --write    also puts it into BENCHMARKS.md (replacing "## Data parallelism")
import os from 'node:os';
import { fmt, machine, mixloraJson, writeBenchmarksSection } from './harness.js';

interface Run {
  ms_per_step: number;
  collective_ms_per_step: number | null;
  collective_backend?: string | null;
  ranks?: number;
}

const bench = (args: string[]) => mixloraJson<Run>(args);

export function runDistributedBench(): string {
  const common = ['bench', '--method', 'mixlora', '--steps', '3', '--warmup', '1', '--json'];
  const cores = os.availableParallelism();
  const alone = bench([...common, '--threads', String(cores)]);
  const two = bench(['launch', '--nproc-per-node', '2', ...common]);
  const share = two.collective_ms_per_step! / two.ms_per_step;
  const backend = two.collective_backend === 'nccl' ? 'NCCL' : 'Gloo';
  return `## Data parallelism (\`mixlora launch\`, ${backend}); ${new Date().toISOString().slice(0, 10)}, ${machine()}

Two ranks on this machine (${Math.max(1, Math.floor(cores / 2))} thread(s) each), each training MixLoRA on the bench preset (llama-58m, float32, 4 × 256
tokens per rank) and summing its gradients through c10d's ${backend} all-reduce every step
(\`bin/mixlora launch --nproc-per-node 2 bench --method mixlora --json\`).

| run | ms/step | ms/step in collectives | share |
|---|---:|---:|---:|
| one process, ${cores} threads | ${fmt(alone.ms_per_step)} | — | — |
| 2 ranks | ${fmt(two.ms_per_step)} | ${fmt(two.collective_ms_per_step!)} | ${(share * 100).toFixed(1)}% |

On one machine the two ranks share its cores, so this shows the cost of the collectives, not a speed-up.
`;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const markdown = runDistributedBench();
  if (process.argv.includes('--write')) writeBenchmarksSection('## Data parallelism', markdown);
  process.stdout.write(markdown);
}
