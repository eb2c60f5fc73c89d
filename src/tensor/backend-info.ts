// What numeric backend this process runs on: libtorch's version and origin, its BLAS (and OpenBLAS's
// kernel family), the CPU's vector capabilities, threads and CUDA devices. For `mixlora info`.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { computeMode, cpuBf16Facts, type CpuBf16Facts } from './compute-mode.js';
import { addonFile, native } from './native.js';
import { openblasCoreChoice, readCpuInfo } from './openblas-core.js';

export interface BackendInfo {
  /** Which backend, in words: "PyTorch 2.x" (the default), "Debian's libtorch (fallback)", or "libtorch <version>". */
  backend: string;
  torch: string;
  /** Where the addon's libtorch came from (the build stamp: "pytorch (.venv)", "system", ...). */
  source: string;
  libtorch_dir: string | null;
  addon: string;
  cuda_build: boolean;
  blas: string;
  /** What float32 projections (linear) run on: oneDNN (native/kernels/linear.cc), or ATen and its BLAS. */
  linear: 'onednn' | 'aten';
  /** Products of 1-16 rows outside autograd (decode steps) through native/kernels/small_gemm.cc's dot-product kernel
   *  with these vectors, or "off" (no AVX2, or MIXLORA_GEMM=onednn or aten). */
  small_gemm: 'avx512' | 'avx2' | 'off';
  /** glibc's malloc keeping freed memory for the next step ("reuse", native/bindings/host_allocator.cc) or as glibc
   *  sets it ("default": MIXLORA_MALLOC=default, malloc settings of your own, or not glibc). */
  host_allocator: 'reuse' | 'default';
  openblas_core: string | null;
  openblas_coretype: string | null;
  openblas_note: string;
  cpu_model: string;
  cpu_flags: { avx2: boolean; avx512: boolean; avx512_bf16: boolean; amx: boolean };
  /** The best kernel capability libtorch uses on this CPU ("CPU capability usage" of its config). */
  torch_cpu_capability: string | null;
  /** The dtype a bfloat16 model computes in on this CPU (tensor/compute-mode.ts), and why. */
  bf16_compute: 'bfloat16' | 'float32';
  bf16_compute_reason: string;
  /** What libtorch and oneDNN say of bfloat16 arithmetic here, which that decision reads. */
  cpu_bf16: CpuBf16Facts;
  threads: number;
  cores: number;
  cuda_available: boolean;
  cuda_devices: number;
  /** c10d's ProcessGroupNCCL is in this addon (data parallelism on CUDA), and its NCCL version ("" without). */
  nccl_build: boolean;
  nccl_version: string;
}

interface BuildStamp {
  source?: string;
  libDir?: string;
}

function readStamp(): BuildStamp {
  // The build folder's stamp (scripts/build-native.mjs) sits one level above Release/mixlora.node.
  try {
    return JSON.parse(fs.readFileSync(path.join(path.dirname(addonFile), '..', 'libtorch.json'), 'utf8')) as BuildStamp;
  } catch {
    return {};
  }
}

/** BLAS_INFO from libtorch's build settings (e.g. "mkl", "open"), else what the config text mentions. */
function blasName(config: string, openblasCore: string | null): string {
  if (openblasCore !== null) return 'OpenBLAS';
  const info = /BLAS_INFO=([^,\s]+)/.exec(config)?.[1];
  if (info === 'mkl' || /Math Kernel Library/.test(config)) return 'MKL';
  if (info) return info;
  return 'unknown';
}

export function backendInfo(): BackendInfo {
  const build = native.buildInfo();
  const blas = native.blasInfo();
  const stamp = readStamp();
  const cpu = readCpuInfo();
  const choice = openblasCoreChoice();
  const cudaAvailable = native.cudaIsAvailable();
  const nccl = native.ncclInfo();
  const major = Number(/^(\d+)\./.exec(build.torchVersion)?.[1] ?? 0);
  const bf16 = computeMode('bfloat16', 'cpu');
  return {
    backend:
      stamp.source === 'system'
        ? "Debian's libtorch (fallback)"
        : major >= 2
          ? 'PyTorch 2.x'
          : `libtorch ${build.torchVersion}`,
    torch: build.torchVersion,
    source: stamp.source ?? 'unknown',
    libtorch_dir: stamp.libDir ?? null,
    addon: addonFile,
    cuda_build: build.cudaBuild,
    blas: blasName(build.config, blas.openblasCore),
    linear: blas.linear,
    small_gemm: blas.smallGemm,
    host_allocator: blas.hostAllocator,
    openblas_core: blas.openblasCore,
    openblas_coretype: process.env.OPENBLAS_CORETYPE ?? null,
    openblas_note: blas.openblasCore === null ? 'libtorch does not use OpenBLAS' : choice.reason,
    cpu_model: cpu.model || os.cpus()[0]?.model || 'unknown',
    cpu_flags: {
      avx2: cpu.flags.has('avx2'),
      avx512: cpu.flags.has('avx512f'),
      avx512_bf16: cpu.flags.has('avx512_bf16'),
      amx: cpu.flags.has('amx_tile'),
    },
    torch_cpu_capability: /CPU capability usage:\s*(\S+)/.exec(build.config)?.[1] ?? null,
    bf16_compute: bf16.compute === 'float32' ? 'float32' : 'bfloat16',
    bf16_compute_reason: bf16.reason,
    cpu_bf16: cpuBf16Facts(),
    threads: native.getNumThreads(),
    cores: os.availableParallelism(),
    cuda_available: cudaAvailable,
    cuda_devices: cudaAvailable ? native.cudaDeviceCount() : 0,
    nccl_build: nccl.built,
    nccl_version: nccl.version,
  };
}
