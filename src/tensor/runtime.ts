// Process-wide settings: threads, random generators, CUDA.
import os from 'node:os';
import { native } from './native.js';
import { Tensor, type Device } from './tensor.js';

export function setNumThreads(n: number): void {
  native.setNumThreads(n);
}
export function getNumThreads(): number {
  return native.getNumThreads();
}

/** Seeds every generator (CPU and each CUDA device), like torch.manual_seed. */
export function manualSeed(seed: number): void {
  native.manualSeed(seed);
}

/** The generator state of a device, for checkpoints; restore with setRngState. */
export function getRngState(device: Device = 'cpu'): Tensor {
  return new Tensor(native.getRngState(device));
}
export function setRngState(state: Tensor, device: Device = 'cpu'): void {
  native.setRngState(device, state.id);
}

export const cuda = {
  isAvailable: (): boolean => native.cudaIsAvailable(),
  deviceCount: (): number => native.cudaDeviceCount(),
  synchronize: (device?: number): void => native.cudaSynchronize(device),
  /** Allocated/reserved bytes now and at peak, or null where the addon has no such function. */
  memoryStats: (device = 0): CudaMemoryStats | null =>
    typeof native.cudaMemoryStats === 'function' ? native.cudaMemoryStats(device) : null,
  /** Starts the peaks over; false where the addon cannot. */
  resetPeakStats: (device = 0): boolean => {
    if (typeof native.cudaResetPeakStats !== 'function') return false;
    native.cudaResetPeakStats(device);
    return true;
  },
};

export interface CudaMemoryStats {
  allocated: number;
  reserved: number;
  peakAllocated: number;
  peakReserved: number;
}

export function buildInfo(): ReturnType<typeof native.buildInfo> {
  return native.buildInfo();
}

let blas: ReturnType<typeof native.blasInfo> | null = null;
/** The addon's product kernels (fixed once it is loaded: read once). */
export function blasInfo(): ReturnType<typeof native.blasInfo> {
  blas ??= native.blasInfo();
  return blas;
}

// Default: all cores (libtorch's own default follows OMP settings, which some builds pin to 1), shared
// among the ranks of a data-parallel job on this machine (LOCAL_WORLD_SIZE, set by torchrun and
// `mixlora launch`), so that they do not oversubscribe the cores.
const envThreads = Number(process.env.MIXLORA_NUM_THREADS);
const localRanks = Number(process.env.LOCAL_WORLD_SIZE);
const cores = os.availableParallelism();
// More threads than cores only slows libtorch down (and a huge number can exhaust the thread limit).
native.setNumThreads(
  Number.isInteger(envThreads) && envThreads > 0
    ? Math.min(envThreads, cores)
    : Number.isInteger(localRanks) && localRanks > 1
      ? Math.max(1, Math.floor(cores / localRanks))
      : cores,
);
