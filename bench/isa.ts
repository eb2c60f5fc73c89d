// The same benchmarks under each vector-instruction level this CPU supports, so that a fast path that exists
// only on the CPU it was tuned on shows up as a cliff on the others (issue 35). The top level runs uncapped;
// each lower one is capped with the libraries' own switches, for mixlora and the PyTorch baselines alike:
// ATEN_CPU_CAPABILITY (ATen's kernels, and through it the addon's own small-row kernels: native/kernels/small_gemm.cc),
// ONEDNN_MAX_CPU_ISA (oneDNN's products) and MKL_ENABLE_INSTRUCTIONS (MKL's). Per level, each in a fresh
// process: the matrix-product probe, training steps (LoRA and MixLoRA in float32, bfloat16 weights and an nf4
// base), HF + PEFT's and the eager reference's steps, a decode step with the addon's kernels and without, and
// serving with 8 clients against 1. Prints one Markdown section with a table per level and the targets.
//   node dist/bench/isa.js                  every level the CPU supports
//   node dist/bench/isa.js --levels avx2    only these (avx512, avx2, sse4.2)
//   node dist/bench/isa.js --write          also puts the section into BENCHMARKS.md ("## Per ISA level")
//   BENCH_STEPS (default 3) timed steps per training run, after one warm-up step
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { NODE_FLAGS } from '../src/util/node-flags.js';
import { packageRoot } from '../src/util/package.js';
import { readCpuInfo } from '../src/tensor/openblas-core.js';
import { fmt, machine, runPython, threads, writeBenchmarksSection } from './harness.js';
import { eager, hfPeft, isRun, ours, probeShare, type StepRun } from './training.js';

const root = packageRoot();
const STEPS = Number(process.env.BENCH_STEPS ?? 3);
const WARMUP = 1;

interface Level {
  /** The name the table uses and --levels takes. */
  id: 'avx512' | 'avx2' | 'sse4.2';
  title: string;
  /** /proc/cpuinfo flags the level needs. */
  needs: string[];
  /** The caps, when the level is below the CPU's own. */
  caps: Record<string, string>;
  /** What `mixlora info` reports as ATen's capability under the caps (a check that they took effect). */
  aten: string;
}

const LEVELS: Level[] = [
  {
    id: 'avx512',
    title: 'AVX-512',
    needs: ['avx512f', 'avx512bw', 'avx512vl', 'avx512dq'],
    caps: { ATEN_CPU_CAPABILITY: 'avx512', ONEDNN_MAX_CPU_ISA: 'AVX512_CORE', MKL_ENABLE_INSTRUCTIONS: 'AVX512' },
    aten: 'AVX512',
  },
  {
    id: 'avx2',
    title: 'AVX2 + FMA',
    needs: ['avx2', 'fma'],
    caps: { ATEN_CPU_CAPABILITY: 'avx2', ONEDNN_MAX_CPU_ISA: 'AVX2', MKL_ENABLE_INSTRUCTIONS: 'AVX2' },
    aten: 'AVX2',
  },
  {
    id: 'sse4.2',
    title: 'SSE4.2 (ATen "default")',
    needs: ['sse4_2'],
    caps: { ATEN_CPU_CAPABILITY: 'default', ONEDNN_MAX_CPU_ISA: 'SSE41', MKL_ENABLE_INSTRUCTIONS: 'SSE4_2' },
    aten: 'DEFAULT',
  },
];

/** The levels a CPU with these /proc/cpuinfo flags supports, best first: the best runs uncapped (it is the
 * CPU's own), each lower one capped. */
export function levelsFor(flags: Set<string>): { level: Level; capped: boolean }[] {
  return LEVELS.filter((l) => l.needs.every((f) => flags.has(f))).map((level, i) => ({ level, capped: i > 0 }));
}

function log(s: string): void {
  process.stderr.write(`bench isa: ${s}\n`);
}

export interface ProbeInfo {
  gflops_fp32: number;
  torch_cpu_capability: string | null;
  small_gemm: string;
  linear: string;
}

function probe(env: Record<string, string>): ProbeInfo {
  const r = spawnSync(
    process.execPath,
    [path.join(root, 'bin', 'mixlora'), 'info', '--json', '--probe', '--threads', String(threads())],
    { encoding: 'utf8', env: { ...process.env, ...env } },
  );
  if (r.status !== 0) throw new Error(`mixlora info --probe failed:\n${r.stderr}`);
  return JSON.parse(r.stdout) as ProbeInfo;
}

/** bench/serve-step.ts's median step times (ms) of a base row and 8 rows mixed over the four methods. */
function decodeSteps(env: Record<string, string>): { base1: number; mixed8: number } {
  const r = spawnSync(process.execPath, [...NODE_FLAGS, path.join(root, 'dist', 'bench', 'serve-step.js')], {
    encoding: 'utf8',
    env: { ...process.env, ...env, BENCH_STEP_ONLY: '1 base,8 mixed', BENCH_STEP_REPS: '7' },
  });
  if (r.status !== 0) throw new Error(`bench/serve-step.ts failed:\n${r.stderr}`);
  const step = (name: string) => {
    const m = new RegExp(`^${name}\\s+step ([\\d.]+) ms`, 'm').exec(r.stdout);
    if (!m) throw new Error(`bench/serve-step.ts printed no '${name}' step:\n${r.stdout}`);
    return Number(m[1]);
  };
  return { base1: step('1 base'), mixed8: step('8 mixed') };
}

interface ServeResult {
  clients: number;
  ratios: number[];
  tokensPerS: number;
}

/** bench/serve.ts with 1 and 8 clients (3 rounds): tokens/s and the median ratio of 8 clients to 1. */
function serving(env: Record<string, string>): { one: number; eight: number; ratio: number } {
  const r = spawnSync(process.execPath, [...NODE_FLAGS, path.join(root, 'dist', 'bench', 'serve.js'), '--json'], {
    encoding: 'utf8',
    maxBuffer: 1 << 24,
    env: { ...process.env, ...env, BENCH_SERVE_CLIENTS: '1,8', BENCH_SERVE_ROUNDS: '3', BENCH_SERVE_REQUESTS: '2' },
  });
  if (r.status !== 0) throw new Error(`bench/serve.ts failed:\n${r.stderr}`);
  const results = JSON.parse(r.stdout.trim().split('\n').pop()!) as ServeResult[];
  const of = (c: number) => results.find((x) => x.clients === c)!;
  const ratios = [...of(8).ratios].sort((a, b) => a - b);
  return { one: of(1).tokensPerS, eight: of(8).tokensPerS, ratio: ratios[Math.floor((ratios.length - 1) / 2)]! };
}

export interface LevelResults {
  level: Level;
  capped: boolean;
  probe: ProbeInfo;
  /** PyTorch's own probe (the BLAS: MKL) under the same caps: whether the cap reached it. */
  torchProbe: number;
  steps: Record<string, StepRun>;
  hf: StepRun | { error: string };
  eagerMix: StepRun;
  decode: { ours: { base1: number; mixed8: number }; libraries: { base1: number; mixed8: number } };
  serve: { one: number; eight: number; ratio: number };
}

const TRAINING: [string, 'lora' | 'mixlora', string[]][] = [
  ['LoRA, float32', 'lora', []],
  ['MixLoRA, float32', 'mixlora', []],
  ['LoRA, bfloat16 weights', 'lora', ['--dtype', 'bfloat16']],
  ['MixLoRA, bfloat16 weights', 'mixlora', ['--dtype', 'bfloat16']],
  ['LoRA, nf4 base', 'lora', ['--quantize', 'nf4']],
  ['MixLoRA, nf4 base', 'mixlora', ['--quantize', 'nf4']],
];

function runLevel(level: Level, capped: boolean): LevelResults {
  const env = capped ? level.caps : {};
  log(
    `${level.title}${
      capped
        ? ` (capped: ${Object.entries(env)
            .map(([k, v]) => `${k}=${v}`)
            .join(' ')})`
        : ''
    }`,
  );
  const info = probe(env);
  if (capped && info.torch_cpu_capability !== level.aten)
    throw new Error(
      `bench isa: under ${level.title}'s caps ATen reports ${info.torch_cpu_capability}, not ${level.aten}: the caps did not take effect`,
    );
  const torchProbe = runPython<{ gflops_fp32: number }>(
    'matmul_probe.py',
    ['--threads', String(threads()), '--float32-only'],
    env,
  ).gflops_fp32;
  log(
    `  probe ${info.gflops_fp32.toFixed(1)} GFLOP/s (PyTorch's ${torchProbe.toFixed(1)}), ATen ${info.torch_cpu_capability}, small rows ${info.small_gemm}`,
  );
  const steps: Record<string, StepRun> = {};
  for (const [name, method, extra] of TRAINING) {
    steps[name] = ours(method, { extra, steps: STEPS, warmup: WARMUP, env });
    log(`  ${name}: ${steps[name].ms_per_step.toFixed(0)} ms/step`);
  }
  const hf = hfPeft('lora', false, { steps: STEPS, warmup: WARMUP, env });
  log(`  HF + PEFT LoRA: ${isRun(hf) ? `${hf.ms_per_step.toFixed(0)} ms/step` : hf.error}`);
  const eagerMix = eager('mixlora', 'reference', 0, { steps: STEPS, warmup: WARMUP, env });
  log(`  eager reference MixLoRA: ${eagerMix.ms_per_step.toFixed(0)} ms/step`);
  const decode = { ours: decodeSteps(env), libraries: decodeSteps({ ...env, MIXLORA_GEMM: 'onednn' }) };
  log(`  decode, 8 mixed rows: ${decode.ours.mixed8} ms (libraries only: ${decode.libraries.mixed8} ms)`);
  const serve = serving(env);
  log(`  serving: 8 clients ${serve.ratio.toFixed(2)}× one`);
  return { level, capped, probe: info, torchProbe, steps, hf, eagerMix, decode, serve };
}

const mark = (ok: boolean) => (ok ? 'yes' : 'no');

/** The Markdown section: a table per level, then its targets. */
export function section(results: LevelResults[]): string {
  const parts = results.map((r) => {
    const ms = (name: string) => r.steps[name]!.ms_per_step;
    const lora = ms('LoRA, float32');
    const mix = ms('MixLoRA, float32');
    const hf = isRun(r.hf) ? r.hf.ms_per_step : NaN;
    const share = (m: 'lora' | 'mixlora', t: number) => probeShare(m, t, r.probe.gflops_fp32);
    const rows = TRAINING.map(([name]) => {
      const t = ms(name);
      const vsF32 = name.startsWith('LoRA') ? t / lora : t / mix;
      return `| mixlora ${name} | ${fmt(t)} | ${vsF32.toFixed(2)}× |`;
    });
    const hfRow = isRun(r.hf) ? `| HF + PEFT LoRA, float32 | ${fmt(hf)} | ${(hf / lora).toFixed(2)}× |` : '';
    const caps = r.capped
      ? Object.entries(r.level.caps)
          .map(([k, v]) => `\`${k}=${v}\``)
          .join(' ')
      : "none (the CPU's own level)";
    const targets: [string, string, string, boolean][] = [
      ['LoRA step vs HF + PEFT', `${(lora / hf).toFixed(2)}×`, '≤ 0.9×', lora / hf <= 0.9],
      [
        'MixLoRA step vs the eager reference',
        `${(mix / r.eagerMix.ms_per_step).toFixed(2)}×`,
        '≤ 0.7×',
        mix / r.eagerMix.ms_per_step <= 0.7,
      ],
      ['MixLoRA step vs LoRA step', `${(mix / lora).toFixed(2)}×`, '≤ 1.3×', mix / lora <= 1.3],
      ['LoRA share of the probe', `${(share('lora', lora) * 100).toFixed(0)}%`, '≥ 75%', share('lora', lora) >= 0.75],
      [
        'MixLoRA share of the probe',
        `${(share('mixlora', mix) * 100).toFixed(0)}%`,
        '≥ 75%',
        share('mixlora', mix) >= 0.75,
      ],
      ['serving, 8 clients vs 1', `${r.serve.ratio.toFixed(2)}×`, '≥ 4×', r.serve.ratio >= 4],
      [
        "decode step (8 rows, 4 methods): the addon's kernels vs the libraries alone",
        `${(r.decode.ours.mixed8 / r.decode.libraries.mixed8).toFixed(2)}×`,
        '≤ 1×',
        r.decode.ours.mixed8 <= r.decode.libraries.mixed8,
      ],
    ];
    const top = results.find((x) => !x.capped);
    const mklNote =
      r.capped && top && r.torchProbe > 0.8 * top.torchProbe
        ? `\n\nPyTorch's probe hardly dropped under the caps (${fmt(r.torchProbe)} against ${fmt(top.torchProbe)} GFLOP/s uncapped): ` +
          "`MKL_ENABLE_INSTRUCTIONS` has no visible effect on MKL on this CPU, so the PyTorch baselines' products keep the " +
          "CPU's own vectors at this level while mixlora's (oneDNN, capped) do not: their rows here are not like for like."
        : '';
    return `### ${r.level.title}

Caps: ${caps}. Probe (\`mixlora info --probe\`, float32 through ${r.probe.linear === 'onednn' ? 'oneDNN' : 'ATen'}): ${fmt(r.probe.gflops_fp32)} GFLOP/s; PyTorch's
(\`bench/python/matmul_probe.py\`, MKL) ${fmt(r.torchProbe)} GFLOP/s. ATen's kernels: ${r.probe.torch_cpu_capability ?? '?'}; the addon's
small-row kernels: ${r.probe.small_gemm}.${mklNote}

| training step (llama-58m, 4 × 256 tokens) | ms | vs its float32 step |
|---|---:|---:|
${rows.join('\n')}
${hfRow}
| eager reference MixLoRA, float32 | ${fmt(r.eagerMix.ms_per_step)} | ${(r.eagerMix.ms_per_step / mix).toFixed(2)}× |

Decode step (\`bench/serve-step.ts\`): one base row ${r.decode.ours.base1.toFixed(1)} ms, 8 rows over the four methods
${r.decode.ours.mixed8.toFixed(1)} ms; with the addon's kernels off (\`MIXLORA_GEMM=onednn\`) ${r.decode.libraries.base1.toFixed(1)} and
${r.decode.libraries.mixed8.toFixed(1)} ms. Serving (\`bench/serve.ts\`, 3 rounds): one client ${fmt(r.serve.one)} tokens/s, 8 clients
${fmt(r.serve.eight)} tokens/s.

| target | measured | target | met |
|---|---:|---:|:---:|
${targets.map(([what, got, want, ok]) => `| ${what} | ${got} | ${want} | ${mark(ok)} |`).join('\n')}
`;
  });
  return `## Per ISA level (\`bench/isa.ts\`); ${new Date().toISOString().slice(0, 10)}, ${machine()}

Every level this CPU supports: its own uncapped, the lower ones capped with the libraries' switches for mixlora
and the PyTorch baselines alike (\`ATEN_CPU_CAPABILITY\`, which also caps the addon's own kernels;
\`ONEDNN_MAX_CPU_ISA\`; \`MKL_ENABLE_INSTRUCTIONS\`). Training: \`mixlora bench --preset llama-58m\`, the median of
${STEPS} steps after ${WARMUP} warm-up, each run in its own process; "bfloat16 weights" computes as the level allows
(float32 products over bfloat16 weights where the CPU has no bfloat16 arithmetic). One run per level, the levels one
after the other: read differences under about 10% as this machine's drift.

${parts.join('\n')}`;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const { values } = parseArgs({ options: { levels: { type: 'string' }, write: { type: 'boolean' } } });
  // A cap already in the environment would run the CPU's own level capped under its name: the levels set
  // their own caps, and nothing else does.
  for (const name of Object.keys(LEVELS[0]!.caps))
    if (process.env[name] !== undefined) {
      log(`${name}=${process.env[name]} in the environment is ignored: each level sets its own caps`);
      delete process.env[name];
    }
  const { flags } = readCpuInfo();
  const supported = levelsFor(flags);
  if (supported.length === 0)
    throw new Error('bench isa: this CPU supports none of the x86 levels (AVX-512, AVX2, SSE4.2)');
  const ids = supported.map((s) => s.level.id as string);
  const wanted = values.levels?.split(',') ?? ids;
  for (const w of wanted)
    if (!ids.includes(w))
      throw new Error(`bench isa: --levels: '${w}' is not one this CPU supports (${ids.join(', ')})`);
  const results = supported.filter((s) => wanted.includes(s.level.id)).map((s) => runLevel(s.level, s.capped));
  const markdown = section(results);
  if (values.write) writeBenchmarksSection('## Per ISA level', markdown);
  process.stdout.write(markdown);
}
