// A short matrix-product measurement: the throughput a training step can at best reach on this machine.
// Square products of `size` (default 2048) timed for about `seconds` per dtype (at least one product: where
// bfloat16 has no hardware support one product can take seconds) after a small warm-up product,
// through linear() (a bᵀ): the path the models' projections take (oneDNN for float32 on the CPU where
// libtorch has it, native/kernels/linear.cc), so that a step's share of the probe compares like with like.
import { randn } from './create.js';
import { cuda } from './runtime.js';
import { linear } from './ops.js';
import { tidy } from './scope.js';
import type { Device } from './tensor.js';
import type { DType } from './dtype.js';

export interface ProbeResult {
  gflops_fp32: number;
  gflops_bf16: number;
  size: number;
}

function sync(device: Device): void {
  if (device !== 'cpu') cuda.synchronize(device === 'cuda' ? 0 : Number(device.slice(5)));
}

/** GFLOP/s of [n, n] × [n, n] products in one dtype (2n³ floating-point operations each). */
export function matmulGflops(dtype: DType, device: Device, size = 2048, seconds = 0.5): number {
  return tidy(() => {
    const a = randn([size, size], { dtype, device }); // [n, n]
    const b = randn([size, size], { dtype, device }); // [n, n]
    // Warm-up: libraries loaded, threads started. Small: where bfloat16 has no hardware support, one product
    // of `size` takes seconds, and the timed loop below runs at least one.
    const w = Math.min(256, size);
    tidy(() => linear(randn([w, w], { dtype, device }), randn([w, w], { dtype, device }))); // [w, w]
    sync(device);
    let reps = 0;
    const t0 = process.hrtime.bigint();
    let elapsed = 0;
    while (elapsed < seconds || reps < 1) {
      tidy(() => linear(a, b)); // [n, n] a bᵀ
      sync(device);
      reps++;
      elapsed = Number(process.hrtime.bigint() - t0) / 1e9;
    }
    return (2 * size ** 3 * reps) / elapsed / 1e9;
  });
}

export function probeMatmul(device: Device = 'cpu', size = 2048, seconds = 0.5): ProbeResult {
  return {
    gflops_fp32: matmulGflops('float32', device, size, seconds),
    gflops_bf16: matmulGflops('bfloat16', device, size, seconds),
    size,
  };
}
