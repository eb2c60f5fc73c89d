// How a bfloat16 model computes. Its weights stay bfloat16 (the memory saving the user asked for); its
// activations and products are bfloat16 too where the CPU multiplies bfloat16 natively (AVX-512-BF16, AMX),
// and float32 elsewhere: on a CPU without bfloat16 arithmetic oneDNN and ATen emulate it several times slower
// than float32 (PyTorch 2.13 on an AVX2 EPYC: 12 GFLOP/s against 94), while widening each bfloat16 weight to
// float32 for its product (native/kernels/linear.cc; the small-row kernel reads it as bfloat16, native/kernels/small_gemm.cc)
// costs a conversion per product. The decision asks libtorch (cpuinfo's flags, its kernel level) and oneDNN
// (its bfloat16 support), and honours their caps (ATEN_CPU_CAPABILITY, ONEDNN_MAX_CPU_ISA), so a run capped
// to AVX2 computes as an AVX2 machine would. `bf16_compute` (config) / `--bf16-compute` (flag) /
// MIXLORA_BF16_COMPUTE (environment) override it: `native` or `float32`.
import { UserError } from '../util/errors.js';
import type { DType } from './dtype.js';
import { native } from './native.js';
import type { Device } from './tensor.js';

export const BF16_COMPUTE = ['auto', 'native', 'float32'] as const;
/** auto: decided from the CPU; native: bfloat16 activations and products; float32: float32 ones. */
export type Bf16Compute = (typeof BF16_COMPUTE)[number];

export function isBf16Compute(s: unknown): s is Bf16Compute {
  return typeof s === 'string' && (BF16_COMPUTE as readonly string[]).includes(s);
}

export function parseBf16Compute(s: string, where: string): Bf16Compute {
  if (!isBf16Compute(s)) throw new UserError(`${where}: '${s}' is not ${BF16_COMPUTE.join(', ')}`);
  return s;
}

/** The user's default: MIXLORA_BF16_COMPUTE, else auto. */
export function defaultBf16Compute(): Bf16Compute {
  const env = process.env.MIXLORA_BF16_COMPUTE;
  return env === undefined || env === '' ? 'auto' : parseBf16Compute(env, 'MIXLORA_BF16_COMPUTE');
}

/** What libtorch and oneDNN say about bfloat16 arithmetic on this CPU, and the caps set on them. */
export interface CpuBf16Facts {
  /** Who answered the CPU flags: libtorch's cpuinfo (PyTorch 2.11+), or cpuid (older libtorch). */
  flagsFrom: 'libtorch' | 'cpuid';
  /** x86_64, arm64, ... (libtorch's name; "unknown" where it gave none). */
  architecture: string;
  avx512Bf16: boolean;
  amxBf16: boolean;
  /** oneDNN's answer (torch.ops.mkldnn._is_mkldnn_bf16_supported); null: no such operator in this libtorch. */
  onednnBf16: boolean | null;
  /** The level of ATen's CPU kernels, which ATEN_CPU_CAPABILITY caps: AVX512, AVX2, DEFAULT, ... */
  atenCapability: string | null;
  /** ONEDNN_MAX_CPU_ISA (or DNNL_MAX_CPU_ISA) as set in the environment, upper-cased; null when unset. */
  onednnMaxIsa: string | null;
}

/** oneDNN ISA caps (ONEDNN_MAX_CPU_ISA) that keep its bfloat16 instructions (AVX512_CORE_BF16 and above). */
const ONEDNN_BF16_ISAS: ReadonlySet<string> = new Set([
  'ALL',
  'DEFAULT',
  'AVX512_CORE_BF16',
  'AVX512_CORE_FP16',
  'AVX10_1_512',
  'AVX512_CORE_AMX',
  'AVX10_1_512_AMX',
  'AVX512_CORE_AMX_FP16',
  'AVX10_1_512_AMX_FP16',
  'AVX10_2_512',
  'AVX10_2_512_AMX_2',
]);

let facts: CpuBf16Facts | null = null;

/** The level of ATen's CPU kernels from libtorch's build summary: AVX512, AVX2, ... or DEFAULT (PyTorch 2.x
 * says "DEFAULT", libtorch 1.13 "NO AVX" for the same level); null where the summary has no such line. */
export function atenCapabilityOf(config: string): string | null {
  const level = /CPU capability usage:\s*([^\n]+)/.exec(config)?.[1]?.trim().toUpperCase();
  if (level === undefined || level === '') return null;
  return level.startsWith('NO AVX') ? 'DEFAULT' : level.split(/\s+/)[0]!;
}

/** This process's facts (asked once: the libraries read their caps once, when first used). */
export function cpuBf16Facts(): CpuBf16Facts {
  if (facts) return facts;
  const cpu = native.cpuBf16();
  const config = native.buildInfo().config;
  const isa = process.env.ONEDNN_MAX_CPU_ISA || process.env.DNNL_MAX_CPU_ISA || '';
  facts = {
    ...cpu,
    atenCapability: atenCapabilityOf(config),
    onednnMaxIsa: isa === '' ? null : isa.toUpperCase(),
  };
  return facts;
}

export interface ComputeMode {
  /** The frozen weights' dtype (what the user asked for). */
  weights: DType;
  /** The activations' and the products' dtype. */
  compute: DType;
  /** Why, in words (describeCompute says the whole of it: mixlora info, the training log). */
  reason: string;
}

/** The mode and why, in one line: "bfloat16 weights, float32 activations and products: the CPU has ...". */
export function describeCompute(m: ComputeMode): string {
  if (m.weights === m.compute) return `${m.weights} weights, activations and products: ${m.reason}`;
  return `${m.weights} weights, ${m.compute} activations and products (each weight widened for its product): ${m.reason}`;
}

/** The CPU's own bfloat16 arithmetic, as libtorch and oneDNN see it under their caps: null when there is
 * some, else why not. */
function noBf16Arithmetic(f: CpuBf16Facts): string | null {
  if (f.architecture !== 'x86_64') {
    return f.onednnBf16 ? null : `oneDNN has no bfloat16 arithmetic on this ${f.architecture} CPU`;
  }
  if (!f.avx512Bf16 && !f.amxBf16)
    return `the CPU has no bfloat16 arithmetic (${f.flagsFrom === 'libtorch' ? "libtorch's cpuinfo" : 'cpuid'}: no AVX-512-BF16, no AMX-BF16)`;
  if (f.onednnMaxIsa !== null && !ONEDNN_BF16_ISAS.has(f.onednnMaxIsa))
    return `ONEDNN_MAX_CPU_ISA=${f.onednnMaxIsa} keeps oneDNN below AVX512_CORE_BF16`;
  if (f.atenCapability !== null && !f.atenCapability.startsWith('AVX512'))
    return `libtorch's kernels run at ${f.atenCapability} (ATEN_CPU_CAPABILITY), below AVX-512`;
  if (f.onednnBf16 === false) return 'oneDNN reports no bfloat16 support';
  return null;
}

function hardwareName(f: CpuBf16Facts): string {
  if (f.architecture !== 'x86_64') return `oneDNN's bfloat16 on ${f.architecture}`;
  return [f.avx512Bf16 ? 'AVX-512-BF16' : null, f.amxBf16 ? 'AMX-BF16' : null].filter(Boolean).join(', ');
}

/** How a model of `dtype` on `device` computes, given what the user asked for and the CPU's facts. Only
 * bfloat16 has a choice; other dtypes compute in themselves. */
export function decideCompute(
  dtype: DType,
  device: Device,
  requested: Bf16Compute,
  f: CpuBf16Facts | (() => CpuBf16Facts),
): ComputeMode {
  if (dtype !== 'bfloat16') return { weights: dtype, compute: dtype, reason: `the dtype asked for` };
  if (requested !== 'auto')
    return {
      weights: dtype,
      compute: requested === 'native' ? dtype : 'float32',
      reason: `asked for (bf16_compute / --bf16-compute / MIXLORA_BF16_COMPUTE: ${requested})`,
    };
  if (device !== 'cpu') return { weights: dtype, compute: dtype, reason: `on ${device}` };
  const cpu = typeof f === 'function' ? f() : f;
  const lacking = noBf16Arithmetic(cpu);
  if (lacking !== null) return { weights: dtype, compute: 'float32', reason: lacking };
  return { weights: dtype, compute: dtype, reason: `the CPU multiplies bfloat16 (${hardwareName(cpu)})` };
}

/** decideCompute with this process's facts (asked only for a bfloat16 model on the CPU in auto mode). */
export function computeMode(dtype: DType, device: Device, requested: Bf16Compute = defaultBf16Compute()): ComputeMode {
  return decideCompute(dtype, device, requested, cpuBf16Facts);
}
