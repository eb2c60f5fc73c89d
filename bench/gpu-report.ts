// The GPU check's results: peak bfloat16 throughput by device, the issue's targets, and the JSON and
// Markdown files (results.json, results.md, benchmarks-gpu.md: a section ready for BENCHMARKS.md).
import fs from 'node:fs';
import path from 'node:path';

export interface Step {
  name: string;
  ok: boolean;
  seconds: number;
  detail: string;
  data?: unknown;
}

export interface BenchRow {
  method: string;
  fused: number;
  impl: string;
  label: string;
  batch: number;
  seq: number;
  ms_per_step: number;
  ms_per_token: number;
  tokens_per_s: number;
  peak_rss_mib: number;
  peak_cuda_allocated_mib: number | null;
  peak_cuda_reserved_mib: number | null;
  model_flops_per_token: number;
  model_tflops: number;
}

export interface Peak {
  tflops: number;
  source: string;
}

// Dense bfloat16 tensor-core peaks (no sparsity) from NVIDIA's data sheets; the first match wins.
const BF16_PEAK_TFLOPS: [RegExp, number, string][] = [
  [/GH200|H200/i, 989, 'H200 / GH200 data sheet'],
  [/H100.*PCIe/i, 756, 'H100 PCIe data sheet'],
  [/H100.*NVL/i, 835, 'H100 NVL data sheet'],
  [/H100|H800/i, 989, 'H100 SXM data sheet'],
  [/B200/i, 2250, 'B200 (HGX B200) data sheet'],
  [/A100|A800/i, 312, 'A100 data sheet'],
  [/L40S/i, 362, 'L40S data sheet'],
  [/\bL4\b/i, 121, 'L4 data sheet'],
  [/\bA10\b/i, 125, 'A10 data sheet'],
];

/** The device's bf16 peak: from the table when the name is known, else the measured matmul probe. */
export function peakTflops(deviceName: string, probeGflops: number): Peak {
  for (const [re, tflops, source] of BF16_PEAK_TFLOPS) if (re.test(deviceName)) return { tflops, source };
  return {
    tflops: probeGflops / 1000,
    source: `measured: bfloat16 2048² matrix products (mixlora info --probe), ${deviceName} not in the table`,
  };
}

export interface Target {
  target: string;
  value: string;
  met: boolean | null;
}

const find = (rows: BenchRow[], impl: (s: string) => boolean, method: string, fused = 1) =>
  rows.find((r) => impl(r.impl) && r.method === method && r.fused === fused);
const ours = (s: string) => s === 'mixlora';
const eager = (s: string) => s !== 'mixlora';

/** The issue's targets, each measured or null where a run is missing. */
export function targetRows(rows: BenchRow[], peak: Peak, onGpu: boolean): Target[] {
  const out: Target[] = [];
  const add = (target: string, ratio: number | null, bound: number, above: boolean, unit = '×') =>
    out.push({
      target,
      value: ratio === null ? 'n/a' : `${unit === '%' ? (100 * ratio).toFixed(1) : ratio.toFixed(2)}${unit}`,
      met: ratio === null ? null : above ? ratio >= bound : ratio <= bound,
    });
  const mix = find(rows, ours, 'mixlora');
  const mixEager = find(rows, eager, 'mixlora');
  const lora = find(rows, ours, 'lora');
  const fused = find(rows, ours, 'mixlora', 2);
  add(
    'MixLoRA tokens/s ≥ 1.0× PyTorch eager',
    mix && mixEager ? mix.tokens_per_s / mixEager.tokens_per_s : null,
    1.0,
    true,
  );
  add(
    'MixLoRA / LoRA latency per token ≤ 1.3× (paper 1.55×)',
    mix && lora ? mix.ms_per_token / lora.ms_per_token : null,
    1.3,
    false,
  );
  const mem = (r: BenchRow) => (onGpu ? r.peak_cuda_allocated_mib : r.peak_rss_mib);
  const m2 = fused && mix ? mem(fused) : null;
  const m1 = mix ? mem(mix) : null;
  add(
    `two MixLoRA fused: peak ${onGpu ? 'CUDA allocated' : 'RSS'} memory ≤ 0.65× two separate runs (paper ~0.6×)`,
    m2 !== null && m1 !== null ? m2 / (2 * m1) : null,
    0.65,
    false,
  );
  add(
    'two MixLoRA fused: time per token ≤ 0.85× separate runs',
    fused && mix ? fused.ms_per_token / mix.ms_per_token : null,
    0.85,
    false,
  );
  add('LoRA MFU ≥ 35%', lora ? lora.model_tflops / peak.tflops : null, 0.35, true, '%');
  return out;
}

const mib = (v: number | null) => (v === null ? 'n/a' : Math.round(v).toLocaleString('en-US'));

function benchTable(rows: BenchRow[], peak: Peak): string {
  const lines = [
    '| method | implementation | batch | ms/token | tokens/s | peak CUDA allocated (MiB) | peak CUDA reserved (MiB) | peak RSS (MiB) | MFU |',
    '|---|---|---|---:|---:|---:|---:|---:|---:|',
  ];
  for (const r of rows) {
    lines.push(
      `| ${r.label} | ${r.impl} | ${r.fused > 1 ? `${r.fused} × ` : ''}${r.batch} × ${r.seq} | ${r.ms_per_token.toFixed(3)} | ` +
        `${Math.round(r.tokens_per_s).toLocaleString('en-US')} | ${mib(r.peak_cuda_allocated_mib)} | ${mib(r.peak_cuda_reserved_mib)} | ` +
        `${mib(r.peak_rss_mib)} | ${r.model_tflops > 0 ? `${((100 * r.model_tflops) / peak.tflops).toFixed(1)}%` : 'n/a'} |`,
    );
  }
  return lines.join('\n');
}

export function writeReports(
  outDir: string,
  r: {
    device: string;
    info: Record<string, unknown>;
    steps: Step[];
    bench: BenchRow[];
    toy: boolean;
    timing: string;
    preset?: string;
    peak?: Peak;
    targets?: Target[];
  },
): void {
  fs.writeFileSync(path.join(outDir, 'results.json'), JSON.stringify(r, null, 2) + '\n');
  const name = String(r.info.device_name ?? r.device);
  const peak = r.peak ?? { tflops: NaN, source: 'n/a' };
  const section = [
    `## GPU: ${name}${r.toy ? ' (CPU mode of scripts/gpu-check.sh: toy sizes, not a measurement)' : ''}`,
    '',
    `Training steps (forward, loss, backward, AdamW) on the \`${r.preset ?? '?'}\` preset with random ` +
      `${r.preset === 'llama2-7b' ? 'bfloat16 weights (LLaMA-2-7B shapes: hidden 4096, intermediate 11008, 32 layers, 32 heads, vocab 32000)' : 'weights'}; ` +
      `LoRA/DoRA r 80, MixLoRA/MixDoRA r 16, 8 experts, top-2, adapters in float32; ${r.timing}, ` +
      `each run its own process. libtorch ${String(r.info.torch ?? '?')}, \`scripts/gpu-check.sh\` on ${new Date().toISOString().slice(0, 10)}. ` +
      'PyTorch eager: transformers + PEFT (SDPA attention) for LoRA/DoRA, the eager MixLoRA reference ' +
      '(bench/python/train_step.py: each expert runs the frozen FFN on its rows) for MixLoRA/MixDoRA, same shapes, dtype and batch.',
    '',
    benchTable(r.bench, peak),
    '',
    `MFU: model FLOPs (src/bench/flops.ts: 4 per frozen weight per token, attention 12·h·T per layer; adapters not counted) ` +
      `per second over the bf16 peak, ${Number.isFinite(peak.tflops) ? peak.tflops.toPrecision(3) : '?'} TFLOP/s (${peak.source}).`,
    '',
    '| target | measured | met |',
    '|---|---:|---|',
    ...(r.targets ?? []).map((t) => `| ${t.target} | ${t.value} | ${t.met === null ? 'n/a' : t.met ? 'yes' : 'no'} |`),
    '',
  ].join('\n');
  fs.writeFileSync(path.join(outDir, 'benchmarks-gpu.md'), section);
  const checks = [
    `# gpu-check on ${name} (${r.device})`,
    '',
    '| step | result | seconds | detail |',
    '|---|---|---:|---|',
    ...r.steps.map(
      (s) =>
        `| ${s.name} | ${s.ok ? 'ok' : '**FAIL**'} | ${s.seconds.toFixed(1)} | ${s.detail.replaceAll('|', '\\|')} |`,
    ),
    '',
    section,
  ].join('\n');
  fs.writeFileSync(path.join(outDir, 'results.md'), checks);
}
