// Loads the libtorch addon (native/build/Release/mixlora.node) and declares its functions.
// Tensors cross the boundary as numeric ids into the addon's table (see native/common.h).
import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';
import { packageRoot } from '../util/package.js';
import { chooseOpenblasCoreType } from './openblas-core.js';

export type Id = number;
type Dims = number[] | null | undefined;

export interface NativeAddon {
  // creation, data, metadata
  fromBuffer(data: ArrayBufferView | ArrayBuffer, dtype: number, shape: number[], device: string | null): Id;
  fromFile(path: string, offset: number, nbytes: number, dtype: number, shape: number[]): Id;
  empty(shape: number[], dtype: number, device: string): Id;
  zeros(shape: number[], dtype: number, device: string): Id;
  ones(shape: number[], dtype: number, device: string): Id;
  full(shape: number[], value: number, dtype: number, device: string): Id;
  arange(start: number, end: number, step: number, dtype: number, device: string): Id;
  rand(shape: number[], dtype: number, device: string): Id;
  randn(shape: number[], dtype: number, device: string): Id;
  randint(low: number, high: number, shape: number[], dtype: number, device: string): Id;
  eye(n: number, dtype: number, device: string): Id;
  uniform_(id: Id, low: number, high: number): void;
  normal_(id: Id, mean: number, std: number): void;
  toBuffer(id: Id): ArrayBuffer;
  item(id: Id): number;
  to(id: Id, dtype: number | null, device: string | null): Id;
  shape(id: Id): number[];
  dtype(id: Id): number;
  device(id: Id): string;
  numel(id: Id): number;
  isContiguous(id: Id): boolean;
  requiresGrad(id: Id): boolean;
  // shapes and indexing
  reshape(id: Id, shape: number[]): Id;
  view(id: Id, shape: number[]): Id;
  permute(id: Id, dims: number[]): Id;
  transpose(id: Id, d0: number, d1: number): Id;
  narrow(id: Id, dim: number, start: number, length: number): Id;
  slice(id: Id, dim: number, start: number, end: number, step: number): Id;
  select(id: Id, dim: number, index: number): Id;
  unsqueeze(id: Id, dim: number): Id;
  squeeze(id: Id, dim?: number | null): Id;
  expand(id: Id, shape: number[]): Id;
  flatten(id: Id, start: number, end: number): Id;
  tril(id: Id, diagonal: number): Id;
  triu(id: Id, diagonal: number): Id;
  repeatInterleave(id: Id, repeats: number, dim: number): Id;
  repeat(id: Id, times: number[]): Id;
  flip(id: Id, dims: number[]): Id;
  asStrided(id: Id, size: number[], stride: number[], offset: number): Id;
  indexSelect(id: Id, dim: number, index: Id): Id;
  gather(id: Id, dim: number, index: Id): Id;
  scatterAdd(id: Id, dim: number, index: Id, src: Id): Id;
  scatter(id: Id, dim: number, index: Id, src: Id | number, srcIsValue: boolean): Id;
  indexAdd(id: Id, dim: number, index: Id, src: Id): Id;
  indexCopy_(id: Id, dim: number, index: Id, src: Id): void;
  maskedFill(id: Id, mask: Id, value: number): Id;
  maskedSelect(id: Id, mask: Id): Id;
  where(cond: Id, a: Id | number, b: Id | number, scalars: number): Id;
  nonzero(id: Id): Id;
  cat(ids: Id[], dim: number): Id;
  stack(ids: Id[], dim: number): Id;
  split(id: Id, sizes: number | number[], dim: number): Id[];
  chunk(id: Id, chunks: number, dim: number): Id[];
  unbind(id: Id, dim: number): Id[];
  // math
  unaryNames(): string[];
  binaryNames(): string[];
  scalarNames(): string[];
  inplaceNames(): string[];
  reduceNames(): string[];
  unary(op: number, id: Id): Id;
  binary(op: number, a: Id, b: Id): Id;
  scalar(op: number, a: Id, s: number | boolean): Id;
  addScaled(a: Id, b: Id, alpha: number): Id;
  clamp(id: Id, min: number | null, max: number | null): Id;
  linear(x: Id, w: Id, b: Id | null): Id;
  lowRankShrink(x: Id, members: Id, inRows: Id | null, weights: Id | null, A: (Id | null)[], scales: number[]): Id;
  lowRankExpand(
    h: Id,
    members: Id,
    outRows: Id | null,
    outCount: number,
    B: (Id | null)[],
    base: Id | null,
    baseRows: Id | null,
    columnScales: Id | null,
  ): Id;
  swiglu(gate: Id, up: Id): Id;
  sumCrossEntropy(logits: Id, target: Id): Id;
  // quantised frozen weights (native/kernels/quant.cc); format 0 = int8, 1 = nf4; portable: the tensor-op version
  // on the CPU too (the CPU otherwise uses its loops)
  quantize(w: Id, format: number, portable: boolean): [Id, Id];
  dequantize(data: Id, scales: Id, format: number, shape: number[], dtype: number, portable: boolean): Id;
  quantLinear(x: Id, data: Id, scales: Id, format: number, shape: number[]): Id;
  inplace(op: number, a: Id, arg?: Id | number, alpha?: number): void;
  reduce(op: number, id: Id, dims: Dims, keepdim: boolean): Id;
  maxDim(id: Id, dim: number, keepdim: boolean): [Id, Id];
  minDim(id: Id, dim: number, keepdim: boolean): [Id, Id];
  argmax(id: Id, dim: number | null, keepdim: boolean): Id;
  norm(id: Id, p: number, dims: Dims, keepdim: boolean): Id;
  variance(id: Id, dims: Dims, unbiased: boolean, keepdim: boolean): Id;
  cumsum(id: Id, dim: number): Id;
  // nn
  softmax(id: Id, dim: number, dtype: number | null): Id;
  logSoftmax(id: Id, dim: number, dtype: number | null): Id;
  reductionNames(): string[];
  crossEntropy(logits: Id, target: Id, ignoreIndex: number, reduction: number, labelSmoothing: number): Id;
  dropout(id: Id, p: number, train: boolean): Id;
  embedding(weight: Id, ids: Id): Id;
  topk(id: Id, k: number, dim: number, largest: boolean, sorted: boolean): [Id, Id];
  sort(id: Id, dim: number, descending: boolean, stable: boolean): [Id, Id];
  oneHot(id: Id, n: number): Id;
  multinomial(probs: Id, n: number, replacement: boolean): Id;
  bincount(id: Id, weights: Id | null, minlength: number): Id;
  sdpa(q: Id, k: Id, v: Id, mask: Id | null, dropoutP: number, isCausal: boolean): Id;
  pagedAttention(q: Id, kPool: Id, vPool: Id, tables: Id, lens: Id, window: number, scale: number): Id;
  // autograd
  setRequiresGrad(id: Id, on: boolean): void;
  isLeaf(id: Id): boolean;
  gradFnName(id: Id): string | null;
  backward(outputs: Id[], grads: (Id | null)[], retainGraph: boolean): void;
  grad(id: Id): Id | null;
  setGrad(id: Id, grad: Id | null): void;
  zeroGrad(ids: Id[]): void;
  setGradEnabled(on: boolean): void;
  isGradEnabled(): boolean;
  // optimizers
  adamw(
    params: Id[],
    expAvg: Id[],
    expAvgSq: Id[],
    step: number,
    lr: number,
    beta1: number,
    beta2: number,
    eps: number,
    weightDecay: number,
  ): void;
  /** 8-bit blockwise AdamW (native/kernels/optim_8bit.cc): codes uint8 [numel], absmax float32 [ceil(numel / 256)]. */
  adamw8bit(
    params: Id[],
    expAvgCodes: Id[],
    expAvgAbsmax: Id[],
    expAvgSqCodes: Id[],
    expAvgSqAbsmax: Id[],
    step: number,
    lr: number,
    beta1: number,
    beta2: number,
    eps: number,
    weightDecay: number,
    forceTensorOps: boolean,
  ): void;
  /** [signed, unsigned]: the 256-entry quantisation maps of adamw8bit's two moments. */
  adamw8bitMaps(): [Id, Id];
  /** Each value's nearest map entry (signed or unsigned map), as adamw8bit's CPU loop quantises. */
  adamw8bitNearest(x: Id, signed: boolean): Id;
  sgd(
    params: Id[],
    buffers: (Id | null)[],
    lr: number,
    momentum: number,
    dampening: number,
    weightDecay: number,
    nesterov: boolean,
  ): Id[];
  clipGradNorm(params: Id[], maxNorm: number): number;
  // runtime
  setNumThreads(n: number): void;
  getNumThreads(): number;
  manualSeed(seed: number): void;
  getRngState(device: string): Id;
  setRngState(device: string, state: Id): void;
  cudaIsAvailable(): boolean;
  cudaDeviceCount(): number;
  cudaSynchronize(device?: number): void;
  /** The CUDA caching allocator's byte counts (addons built before these existed lack both functions). */
  cudaMemoryStats?(device: number): {
    allocated: number;
    reserved: number;
    peakAllocated: number;
    peakReserved: number;
  };
  cudaResetPeakStats?(device: number): void;
  free(id: Id): boolean;
  freeMany(ids: Id[]): void;
  liveCount(): number;
  externalBytes(): number;
  buildInfo(): { torchVersion: string; cudaBuild: boolean; cxx11Abi: boolean; parallelInfo: string; config: string };
  blasInfo(): {
    openblasCore: string | null;
    openblasConfig: string | null;
    linear: 'onednn' | 'aten';
    smallGemm: 'avx512' | 'avx2' | 'off';
    hostAllocator: 'reuse' | 'default';
  };
  /** Whether the CPU does bfloat16 arithmetic, as libtorch (cpuinfo) and oneDNN see it (native/bindings/runtime.cc). */
  cpuBf16(): {
    flagsFrom: 'libtorch' | 'cpuid';
    architecture: string;
    avx512Bf16: boolean;
    amxBf16: boolean;
    onednnBf16: boolean | null;
  };
  // distributed (c10d: TCPStore + ProcessGroupGloo, and ProcessGroupNCCL for CUDA tensors with ncclDevice;
  // native/distributed/distributed.cc, native/distributed/nccl.cc)
  distInit(opts: {
    rank: number;
    worldSize: number;
    masterAddr: string;
    masterPort: number;
    timeoutMs: number;
    ncclDevice?: number;
  }): void;
  distAllReduceSum(ids: Id[]): void;
  distAllGather(id: Id): Id;
  distAllGatherStart(id: Id): number;
  distAllGatherFinish(handle: number): Id;
  distBarrier(): void;
  distBackend(): 'gloo' | 'nccl';
  distDestroy(): void;
  ncclInfo(): { built: boolean; version: string };
  // lifeline.cc: exit with `message` once the parent process is no longer `pid`
  watchParent(pid: number, message: string): void;
  // profile.cc: per-op calls and self milliseconds between the two calls
  profileStart(): void;
  profileStop(): Record<string, [calls: number, selfMs: number]>;
}

/** The addon file this process loads: MIXLORA_ADDON, else the default build. */
export const addonFile = path.resolve(
  process.env.MIXLORA_ADDON ?? path.join(packageRoot(), 'native', 'build', 'Release', 'mixlora.node'),
);

function load(): NativeAddon {
  const file = addonFile;
  if (!fs.existsSync(file)) {
    throw new Error(
      `mixlora: the native addon is not built (${file} is missing). In a checkout: \`make setup\`; where mixlora is ` +
        `installed as a package (npm skipped its install script, or it failed): \`npm rebuild mixlora\`.`,
    );
  }
  // Must run before libtorch (and any OpenBLAS it links) is loaded: OpenBLAS reads this once, at load.
  chooseOpenblasCoreType(file);
  // oneDNN keeps the kernels it compiled per shape in a cache of 1024 by default; the float32 projections
  // (native/kernels/linear.cc) with their backward and bucketed row counts can use more, and a miss costs a
  // recompilation (milliseconds). Read once, when oneDNN first runs; a value you set is kept.
  process.env.ONEDNN_PRIMITIVE_CACHE_CAPACITY ??= '8192';
  return createRequire(import.meta.url)(file) as NativeAddon;
}

export const native: NativeAddon = load();
