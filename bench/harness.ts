// Shared by the benchmarks: timing, the PyTorch side run in the same invocation, and tables.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { packageRoot } from '../src/util/package.js';
import { NODE_FLAGS } from '../src/util/node-flags.js';
import { readCpuInfo } from '../src/tensor/openblas-core.js';

// The project's .venv (PyTorch 2.x, transformers, peft: `make setup`), unless PYTHON names another.
const venvPython = path.join(packageRoot(), '.venv', 'bin', 'python');
export const PYTHON = process.env.PYTHON ?? (fs.existsSync(venvPython) ? venvPython : 'python3');

/** Median milliseconds of `reps` calls after `warmup` calls. */
export function medianMs(fn: () => void, reps: number, warmup = 2): number {
  for (let i = 0; i < warmup; i++) fn();
  const times: number[] = [];
  for (let i = 0; i < reps; i++) {
    const t0 = process.hrtime.bigint();
    fn();
    times.push(Number(process.hrtime.bigint() - t0) / 1e6);
  }
  times.sort((a, b) => a - b);
  return times[Math.floor(times.length / 2)]!;
}

/** Runs bench/python/<script> with args; it prints one JSON object on its last stdout line. */
export function runPython<T>(script: string, args: string[], env: Record<string, string> = {}): T {
  const file = path.join(packageRoot(), 'bench', 'python', script);
  const r = spawnSync(PYTHON, [file, ...args], {
    encoding: 'utf8',
    maxBuffer: 1 << 24,
    env: { ...process.env, ...env },
  });
  if (r.status !== 0) {
    throw new Error(
      `${PYTHON} ${script} failed (exit ${r.status}):\n${r.stderr}\n` +
        'The PyTorch baselines need the .venv that `make setup` makes (PyTorch 2.x, transformers, peft).',
    );
  }
  const lines = r.stdout.trim().split('\n');
  return JSON.parse(lines[lines.length - 1]!) as T;
}

/** Runs bin/mixlora with args (`bench ... --json`, alone or under `launch`) and returns the last JSON line it
 * printed: its own, or rank 0's under a launcher (which prefixes each rank's lines with "[rank N] "). */
export function mixloraJson<T>(args: string[]): T {
  const bin = path.join(packageRoot(), 'bin', 'mixlora');
  const r = spawnSync(process.execPath, [...NODE_FLAGS, bin, ...args], { encoding: 'utf8', maxBuffer: 1 << 24 });
  if (r.status !== 0) throw new Error(`mixlora ${args.join(' ')} failed:\n${r.stderr}`);
  const json = r.stdout
    .split('\n')
    .filter((l) => l.startsWith('{') || l.startsWith('[rank 0] {'))
    .map((l) => l.replace(/^\[rank 0\] /, ''));
  if (json.length === 0) throw new Error(`mixlora ${args.join(' ')} printed no JSON line:\n${r.stdout}`);
  return JSON.parse(json[json.length - 1]!) as T;
}

export function threads(): number {
  const n = Number(process.env.MIXLORA_NUM_THREADS);
  return Number.isInteger(n) && n > 0 ? n : os.availableParallelism();
}

export interface Row {
  name: string;
  ours: number;
  torch: number;
  unit: string;
  lowerIsBetter?: boolean;
}

/** A Markdown table: ours, PyTorch's, and ours/PyTorch (below 1 = we are faster, for times). */
export function table(rows: Row[]): string {
  const out = ['| measurement | mixlora | PyTorch | mixlora / PyTorch |', '|---|---:|---:|---:|'];
  for (const r of rows) {
    out.push(
      `| ${r.name} | ${fmt(r.ours)} ${r.unit} | ${fmt(r.torch)} ${r.unit} | ${(r.ours / r.torch).toFixed(2)}× |`,
    );
  }
  return out.join('\n');
}

export function fmt(x: number): string {
  return x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x >= 1 ? x.toFixed(2) : x.toPrecision(3);
}

/** The CPU's vector extensions that decide which kernels run: AVX2, AVX-512, AVX-512-BF16, AMX. */
export function vectorExtensions(flags = readCpuInfo().flags): string {
  const has = (f: string) => flags.has(f);
  const parts = [has('avx2') ? 'AVX2' : 'no AVX2', has('avx512f') ? 'AVX-512' : 'no AVX-512'];
  if (has('avx512f')) parts.push(has('avx512_bf16') ? 'AVX-512-BF16' : 'no AVX-512-BF16');
  parts.push(has('amx_bf16') ? 'AMX' : 'no AMX');
  return parts.join(', ');
}

export function machine(): string {
  const cpu = os.cpus()[0]?.model ?? 'unknown CPU';
  return `${cpu} (${vectorExtensions()}), ${os.availableParallelism()} cores, ${(os.totalmem() / 2 ** 30).toFixed(0)} GiB; ${threads()} torch threads`;
}

export function peakRssMiB(): number {
  return process.resourceUsage().maxRSS / 1024;
}

/** Replaces BENCHMARKS.md's section that starts with `heading` (up to the next "## "), or appends it. */
export function writeBenchmarksSection(heading: string, markdown: string): void {
  const file = path.join(packageRoot(), 'BENCHMARKS.md');
  const old = fs.existsSync(file) ? fs.readFileSync(file, 'utf8') : '# Benchmarks\n';
  const start = old.indexOf(`\n${heading}`);
  let next = start < 0 ? -1 : old.indexOf('\n## ', start + 1);
  if (next < 0) next = old.length;
  const updated =
    start < 0
      ? `${old.trimEnd()}\n\n${markdown}`
      : `${old.slice(0, start).trimEnd()}\n\n${markdown}${next < old.length ? `\n${old.slice(next + 1)}` : ''}`;
  fs.writeFileSync(file, updated);
}
