// Runs every benchmark side by side with what users would otherwise run (PyTorch 2.x, HF transformers + PEFT
// in the project's .venv) and writes BENCHMARKS.md. The training steps: bench/training.ts (BENCH_ROUNDS,
// default 3, rounds of separate processes; the fastest round is kept, as on a shared machine slow rounds
// are other tenants' load).
//   node dist/bench/run.js            (make bench)
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { NODE_FLAGS } from '../src/util/node-flags.js';
import { packageRoot } from '../src/util/package.js';
import { buildInfo } from '../src/tensor/runtime.js';
import { PYTHON, fmt, machine, runPython, table, threads } from './harness.js';
import { runEngineBench } from './engine.js';
import { runModelsBench } from './models.js';
import { runMoeBench } from './moe.js';
import { runTrainingBench } from './training.js';
import { trainingSection } from './training-report.js';
import { runDistributedBench } from './distributed.js';
import { runQuantizationBench } from './quantization.js';
import { runPackingBench } from './packing.js';
import { runAdapterMemoryBench } from './adapter-memory.js';

const root = packageRoot();

function log(s: string): void {
  process.stderr.write(`${s}\n`);
}

const training = runTrainingBench();
log('MixLoRA block, engine, inference benchmarks');
const moe = runMoeBench();
const engine = runEngineBench();
// The backend's matrix-product throughput, ours (the addon's libtorch) beside the .venv's PyTorch.
interface Probe {
  gflops_fp32: number;
  gflops_bf16: number;
}
interface GemmBackends {
  torch: string;
  blas: string;
  rows: { out: number; in: number; rows: number; default_ms: number; onednn_ms: number }[];
}
const probeOurs = JSON.parse(
  spawnSync(
    process.execPath,
    [path.join(root, 'bin', 'mixlora'), 'info', '--json', '--probe', '--threads', String(threads())],
    {
      encoding: 'utf8',
    },
  ).stdout,
) as Probe & {
  torch: string;
  blas: string;
  linear: string;
  openblas_core: string | null;
  torch_cpu_capability: string | null;
};
const probeTorch = runPython<Probe>('matmul_probe.py', ['--threads', String(threads())]);
log('float32 products: the BLAS against oneDNN');
const gemm = runPython<GemmBackends>('gemm_backends.py', ['--threads', String(threads())]);
const models = runModelsBench();
// Serving runs in its own process (its server and clients share one event loop).
log('serving benchmark');
const serve = spawnSync(process.execPath, [...NODE_FLAGS, path.join(root, 'dist', 'bench', 'serve.js')], {
  encoding: 'utf8',
  maxBuffer: 1 << 24,
  stdio: ['ignore', 'pipe', 'inherit'],
});
if (serve.status !== 0) throw new Error('bench/serve.ts failed');
log('serving with structured output');
const structured = spawnSync(
  process.execPath,
  [...NODE_FLAGS, path.join(root, 'dist', 'bench', 'serve.js'), '--structured'],
  { encoding: 'utf8', maxBuffer: 1 << 24, stdio: ['ignore', 'pipe', 'inherit'] },
);
if (structured.status !== 0) throw new Error('bench/serve.ts --structured failed');
log('structured output: the grammar engine per token, and compiling schemas');
const grammarCosts = ['', '--calibrate'].map((flag) => {
  const r = spawnSync(process.execPath, [path.join(root, 'dist', 'bench', 'structured.js'), ...(flag ? [flag] : [])], {
    encoding: 'utf8',
    maxBuffer: 1 << 24,
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  if (r.status !== 0) throw new Error(`bench/structured.ts ${flag} failed`);
  return r.stdout.trim();
});

log('data parallelism (2 ranks)');
const distributed = runDistributedBench();
log('quantised base');
const quantization = runQuantizationBench();
log('packing (padded against packed, and transformers + PEFT with DataCollatorWithFlattening)');
const packing = runPackingBench();
log('adapter memory: two MixLoRA adapters fused against two runs, with and without the memory options');
const adapterMemory = runAdapterMemoryBench();

const pyVersion = spawnSync(PYTHON, ['-c', 'import torch; print(torch.__version__)'], {
  encoding: 'utf8',
}).stdout.trim();
const md = `# Benchmarks

Measured by \`make bench\` (\`bench/run.sh\`) on ${new Date().toISOString().slice(0, 10)}: ${machine()}.
mixlora on libtorch ${buildInfo().torchVersion}; PyTorch ${pyVersion} (the .venv's) for the eager baselines, run in the
same invocation with the same thread count. Times are wall clock on a shared virtual machine whose speed drifts
by up to ±30% over minutes: read the ratios, and differences under about 10% as noise.

${trainingSection(training, probeOurs.gflops_fp32)}
## Matrix-product throughput (\`mixlora info --probe\`)

2048 × 2048 products, one warm-up then about 0.5 s each; \`bench/python/matmul_probe.py\` times PyTorch the same way
(\`torch.matmul\`). mixlora's probe runs its \`linear\` (${probeOurs.linear === 'onednn' ? 'oneDNN for float32' : 'ATen'}), the path of its projections.
mixlora's libtorch ${probeOurs.torch} (BLAS: ${probeOurs.blas}${probeOurs.openblas_core ? `, kernels ${probeOurs.openblas_core}` : ''}; kernels ${probeOurs.torch_cpu_capability ?? 'unknown'}).

| dtype | mixlora GFLOP/s | PyTorch ${pyVersion} GFLOP/s | mixlora / PyTorch |
|---|---:|---:|---:|
| float32 | ${fmt(probeOurs.gflops_fp32)} | ${fmt(probeTorch.gflops_fp32)} | ${(probeOurs.gflops_fp32 / probeTorch.gflops_fp32).toFixed(2)}× |
| bfloat16 | ${fmt(probeOurs.gflops_bf16)} | ${fmt(probeTorch.gflops_bf16)} | ${(probeOurs.gflops_bf16 / probeTorch.gflops_bf16).toFixed(2)}× |

### float32 products: PyTorch's default (${gemm.blas}) against oneDNN

\`bench/python/gemm_backends.py\`: x Wᵀ for W [out, in] of llama-58m's and TinyLlama's projections, from a decode
step's rows to a training batch's tokens, in PyTorch ${gemm.torch}: \`torch.nn.functional.linear\` (what PyTorch,
HF transformers and PEFT run for float32) against oneDNN's \`mkldnn::_linear_pointwise\` (what mixlora's \`linear\`
calls, native/kernels/linear.cc). GFLOP/s = 2·rows·in·out / time.

| W out × in | rows | ${gemm.blas} ms | oneDNN ms | ${gemm.blas} GFLOP/s | oneDNN GFLOP/s | oneDNN speed-up |
|---|---:|---:|---:|---:|---:|---:|
${gemm.rows
  .map((r) => {
    const gf = (ms: number) => fmt((2 * r.rows * r.in * r.out) / ms / 1e6);
    return `| ${r.out} × ${r.in} | ${r.rows} | ${fmt(r.default_ms)} | ${fmt(r.onednn_ms)} | ${gf(r.default_ms)} | ${gf(r.onednn_ms)} | ${(r.default_ms / r.onednn_ms).toFixed(2)}× |`;
  })
  .join('\n')}

## MixLoRA block: the efficient expert path

Forward and backward of one MixLoRA block (router + 8 LoRA experts on gate/up/down, top-2, r 16) on 4×256
tokens at hidden 512 (\`bench/moe.ts\`).

| path | ms | vs per-expert |
|---|---:|---:|
| efficient (frozen gate/up/down once per token, experts add their LoRA deltas on their rows) | ${fmt(moe.efficientMs)} | ${(moe.perExpertMs / moe.efficientMs).toFixed(2)}× faster |
| per expert (each expert runs the whole FFN on its rows) | ${fmt(moe.perExpertMs)} | 1.00× |
| PyTorch eager, reference-style per-expert block | ${fmt(moe.torchReferenceMs)} | |

The paper reports about 10% for its fused path.

## Engine overhead (\`bench/engine.ts\`); lower is better

${table(engine.rows)}

## Inference (\`bench/models.ts\`): LLaMA-shaped, vocab 32000, hidden 512, 8 layers; higher is better

${table(models.rows)}

${serve.stdout.trim()}

${structured.stdout.trim()}

## Structured output: the grammar's cost (\`bench/structured.ts\`); ${machine()}

Per decode step of a constrained row (allowed-token mask, applying it to the logits, accepting the token):

${grammarCosts[0]}

Compiling a schema (\`--calibrate\`), against the estimate that bounds it (src/serve/structured/cost.ts):

${grammarCosts[1]}

${distributed}
${quantization}
${packing}
${adapterMemory}`;
fs.writeFileSync(path.join(root, 'BENCHMARKS.md'), md);
process.stdout.write(md);
