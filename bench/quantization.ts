// The quantised frozen base (issue 16): resident bytes of the base on the 1B-shaped preset in float32,
// bfloat16, int8 and NF4, and what dequantising on the fly costs per training step on the bench preset.
//   node dist/bench/quantization.js            prints the Markdown section
//   node dist/bench/quantization.js --write    also puts it into BENCHMARKS.md (replacing "## Quantised base")
import { fmt, machine, mixloraJson, threads, writeBenchmarksSection } from './harness.js';

interface Run {
  ms_per_step: number;
  base_mib: number;
  rss_after_base_mib: number;
}

function bench(args: string[]): Run {
  return mixloraJson<Run>(['bench', '--method', 'lora', '--threads', String(threads()), '--json', ...args]);
}

const BASES = [
  { name: 'float32', args: ['--dtype', 'float32'] },
  { name: 'bfloat16', args: ['--dtype', 'bfloat16'] },
  { name: 'int8', args: ['--dtype', 'bfloat16', '--quantize', 'int8'] },
  { name: 'nf4', args: ['--dtype', 'bfloat16', '--quantize', 'nf4'] },
];

export function runQuantizationBench(): string {
  // Memory: the 1B preset loaded (one short step, so the process is the one a run would be).
  const memory = BASES.map((b) => ({
    ...b,
    run: bench(['--preset', 'llama-1b', '--batch', '1', '--seq', '8', '--steps', '1', '--warmup', '0', ...b.args]),
  }));
  const bf16 = memory.find((m) => m.name === 'bfloat16')!.run.base_mib;
  // Step time: llama-58m in float32, the base as loaded or quantised (dequantised per product, in float32).
  const steps = [
    { name: 'float32', args: [] as string[] },
    { name: 'int8', args: ['--quantize', 'int8'] },
    { name: 'nf4', args: ['--quantize', 'nf4'] },
  ].map((s) => ({ ...s, run: bench(['--steps', '3', '--warmup', '1', ...s.args]) }));
  const plain = steps[0]!.run.ms_per_step;
  return `## Quantised base (\`--quantize\`); ${new Date().toISOString().slice(0, 10)}, ${machine()}

Resident bytes of the frozen base (\`base_mib\`: its tensors, or the codes and scales of the quantised decoder
projections plus the embeddings, norms and lm_head as loaded) and the process's resident set right after loading
it, on \`--preset llama-1b\` (TinyLlama-1.1B's shapes):

| base | base MiB | vs bfloat16 | RSS after loading MiB |
|---|---:|---:|---:|
${memory.map((m) => `| ${m.name} | ${fmt(m.run.base_mib)} | ${(m.run.base_mib / bf16).toFixed(2)}× | ${fmt(m.run.rss_after_base_mib)} |`).join('\n')}

Step time of LoRA on the bench preset (llama-58m, float32 activations, 4 × 256 tokens), the projections
dequantised for each product and again for the input gradient:

| base | ms/step | vs float32 base |
|---|---:|---:|
${steps.map((s) => `| ${s.name} | ${fmt(s.run.ms_per_step)} | ${(s.run.ms_per_step / plain).toFixed(2)}× |`).join('\n')}
`;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const markdown = runQuantizationBench();
  if (process.argv.includes('--write')) writeBenchmarksSection('## Quantised base', markdown);
  process.stdout.write(markdown);
}
