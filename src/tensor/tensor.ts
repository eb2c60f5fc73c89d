// The Tensor class: a handle on a libtorch tensor with ATen's semantics (broadcasting, dtype
// promotion, autograd). Every method is a thin call into the addon; see native/*.cc.
import { dtypeCode, dtypeFromCode, typedArrayFor, type DType, type TypedArray } from './dtype.js';
import { native, type Id } from './native.js';
import { BINARY, INPLACE, REDUCE, SCALAR, UNARY } from './op-codes.js';
import { markKept, track } from './scope.js';

export type Device = 'cpu' | 'cuda' | `cuda:${number}`;
export type Scalar = number;

const DISPOSED = -1;

export class Tensor {
  private _id: Id;
  private _kept = false;
  // A tensor's shape, dtype and device never change (no op here resizes or moves one in place): read once.
  private _shape: number[] | undefined;
  private _dtype: DType | undefined;
  private _device: Device | undefined;

  /** Wraps an id the addon returned; the innermost scope takes ownership. */
  constructor(id: Id) {
    this._id = id;
    track(this, id);
  }

  // ---- identity and lifetime ------------------------------------------------------------------
  get id(): Id {
    if (this._id === DISPOSED) throw new Error('tensor used after dispose()');
    return this._id;
  }
  get isDisposed(): boolean {
    return this._id === DISPOSED;
  }
  get isKept(): boolean {
    return this._kept;
  }
  /** Frees the native tensor now. Safe to call twice. */
  dispose(): void {
    if (this._id === DISPOSED) return;
    native.free(this._id);
    this._id = DISPOSED;
  }
  /** Exempts this tensor from enclosing scopes (the caller owns it). */
  keep(): this {
    markKept(this);
    return this;
  }
  /** @internal used by scopes: marks disposed and returns the id to free. */
  markDisposed(): Id {
    const id = this._id;
    this._id = DISPOSED;
    return id;
  }
  /** @internal */
  markKept(): void {
    this._kept = true;
  }

  // ---- metadata -------------------------------------------------------------------------------
  get shape(): readonly number[] {
    return (this._shape ??= native.shape(this.id));
  }
  get ndim(): number {
    return this.shape.length;
  }
  size(dim: number): number {
    const s = this.shape;
    return s[dim < 0 ? s.length + dim : dim]!;
  }
  get numel(): number {
    return this.shape.reduce((a, b) => a * b, 1);
  }
  get dtype(): DType {
    return (this._dtype ??= dtypeFromCode(native.dtype(this.id)));
  }
  get device(): Device {
    return (this._device ??= native.device(this.id) as Device);
  }
  get isContiguous(): boolean {
    return native.isContiguous(this.id);
  }
  get requiresGrad(): boolean {
    return native.requiresGrad(this.id);
  }
  get isLeaf(): boolean {
    return native.isLeaf(this.id);
  }
  toString(): string {
    return `Tensor(shape=[${this.shape.join(', ')}], dtype=${this.dtype}, device=${this.device})`;
  }

  // ---- data out -------------------------------------------------------------------------------
  /** The elements, row-major, in the typed array of the dtype (float16/bfloat16 as raw bits). */
  toTypedArray(): TypedArray {
    return typedArrayFor(this.dtype, native.toBuffer(this.id));
  }
  toFloat32Array(): Float32Array {
    if (this.dtype === 'float32') return new Float32Array(native.toBuffer(this.id));
    const id = native.to(this.id, dtypeCode('float32'), null);
    try {
      return new Float32Array(native.toBuffer(id));
    } finally {
      native.free(id);
    }
  }
  toFloat64Array(): Float64Array {
    const id = native.to(this.id, dtypeCode('float64'), null);
    try {
      return new Float64Array(native.toBuffer(id));
    } finally {
      native.free(id);
    }
  }
  /** The elements as plain numbers (int64 converted; exact below 2^53). */
  toNumbers(): number[] {
    const a = this.toTypedArray();
    if (a instanceof BigInt64Array) return Array.from(a, Number);
    if (this.dtype === 'float16' || this.dtype === 'bfloat16') return Array.from(this.toFloat32Array());
    return Array.from(a as ArrayLike<number>);
  }
  /** Nested arrays in the tensor's shape. */
  toList(): unknown {
    const flat = this.toNumbers();
    const shape = this.shape;
    if (shape.length === 0) return flat[0];
    let i = 0;
    const build = (d: number): unknown => {
      const out: unknown[] = [];
      for (let k = 0; k < shape[d]!; k++) out.push(d === shape.length - 1 ? flat[i++] : build(d + 1));
      return out;
    };
    return build(0);
  }
  item(): number {
    return native.item(this.id);
  }

  // ---- conversion -----------------------------------------------------------------------------
  to(target: DType | Device | { dtype?: DType; device?: Device }): Tensor {
    const o =
      typeof target === 'string'
        ? target === 'cpu' || target.startsWith('cuda')
          ? { device: target as Device }
          : { dtype: target as DType }
        : target;
    return new Tensor(native.to(this.id, o.dtype ? dtypeCode(o.dtype) : null, o.device ?? null));
  }
  float(): Tensor {
    return this.to('float32');
  }
  clone(): Tensor {
    return this.unaryOp('clone');
  }
  contiguous(): Tensor {
    return this.unaryOp('contiguous');
  }
  detach(): Tensor {
    return this.unaryOp('detach');
  }

  // ---- views and shapes -----------------------------------------------------------------------
  reshape(...shape: number[]): Tensor {
    return new Tensor(native.reshape(this.id, shape));
  }
  view(...shape: number[]): Tensor {
    return new Tensor(native.view(this.id, shape));
  }
  permute(...dims: number[]): Tensor {
    return new Tensor(native.permute(this.id, dims));
  }
  transpose(d0: number, d1: number): Tensor {
    return new Tensor(native.transpose(this.id, d0, d1));
  }
  /** Transpose of the last two dims. */
  get mT(): Tensor {
    return this.transpose(-2, -1);
  }
  narrow(dim: number, start: number, length: number): Tensor {
    return new Tensor(native.narrow(this.id, dim, start, length));
  }
  slice(dim: number, start: number, end: number, step = 1): Tensor {
    return new Tensor(native.slice(this.id, dim, start, end, step));
  }
  select(dim: number, index: number): Tensor {
    return new Tensor(native.select(this.id, dim, index));
  }
  unsqueeze(dim: number): Tensor {
    return new Tensor(native.unsqueeze(this.id, dim));
  }
  squeeze(dim?: number): Tensor {
    return new Tensor(native.squeeze(this.id, dim ?? null));
  }
  expand(...shape: number[]): Tensor {
    return new Tensor(native.expand(this.id, shape));
  }
  flatten(start = 0, end = -1): Tensor {
    return new Tensor(native.flatten(this.id, start, end));
  }
  tril(diagonal = 0): Tensor {
    return new Tensor(native.tril(this.id, diagonal));
  }
  triu(diagonal = 0): Tensor {
    return new Tensor(native.triu(this.id, diagonal));
  }
  repeatInterleave(repeats: number, dim: number): Tensor {
    return new Tensor(native.repeatInterleave(this.id, repeats, dim));
  }
  repeat(...times: number[]): Tensor {
    return new Tensor(native.repeat(this.id, times));
  }
  flip(...dims: number[]): Tensor {
    return new Tensor(native.flip(this.id, dims));
  }
  asStrided(size: number[], stride: number[], offset = 0): Tensor {
    return new Tensor(native.asStrided(this.id, size, stride, offset));
  }

  // ---- indexing -------------------------------------------------------------------------------
  indexSelect(dim: number, index: Tensor): Tensor {
    return new Tensor(native.indexSelect(this.id, dim, index.id));
  }
  gather(dim: number, index: Tensor): Tensor {
    return new Tensor(native.gather(this.id, dim, index.id));
  }
  scatterAdd(dim: number, index: Tensor, src: Tensor): Tensor {
    return new Tensor(native.scatterAdd(this.id, dim, index.id, src.id));
  }
  scatter(dim: number, index: Tensor, src: Tensor | Scalar): Tensor {
    return new Tensor(
      native.scatter(this.id, dim, index.id, typeof src === 'number' ? src : src.id, typeof src === 'number'),
    );
  }
  indexAdd(dim: number, index: Tensor, src: Tensor): Tensor {
    return new Tensor(native.indexAdd(this.id, dim, index.id, src.id));
  }
  /** In place: rows `index` along dim become `src` (caches; not for tensors autograd tracks). */
  indexCopy_(dim: number, index: Tensor, src: Tensor): this {
    native.indexCopy_(this.id, dim, index.id, src.id);
    return this;
  }
  maskedFill(mask: Tensor, value: Scalar): Tensor {
    return new Tensor(native.maskedFill(this.id, mask.id, value));
  }
  maskedSelect(mask: Tensor): Tensor {
    return new Tensor(native.maskedSelect(this.id, mask.id));
  }
  nonzero(): Tensor {
    return new Tensor(native.nonzero(this.id));
  }
  split(sizes: number | number[], dim = 0): Tensor[] {
    return native.split(this.id, sizes, dim).map((i) => new Tensor(i));
  }
  chunk(chunks: number, dim = 0): Tensor[] {
    return native.chunk(this.id, chunks, dim).map((i) => new Tensor(i));
  }
  unbind(dim = 0): Tensor[] {
    return native.unbind(this.id, dim).map((i) => new Tensor(i));
  }

  // ---- elementwise ----------------------------------------------------------------------------
  private unaryOp(op: string): Tensor {
    return new Tensor(native.unary(UNARY[op]!, this.id));
  }
  private binaryOp(op: string, other: Tensor | Scalar): Tensor {
    return typeof other === 'number'
      ? new Tensor(native.scalar(SCALAR[op]!, this.id, other))
      : new Tensor(native.binary(BINARY[op]!, this.id, other.id));
  }
  /** this + alpha·other */
  add(other: Tensor | Scalar, alpha?: number): Tensor {
    if (alpha !== undefined && typeof other !== 'number') return new Tensor(native.addScaled(this.id, other.id, alpha));
    return this.binaryOp('add', alpha === undefined || typeof other !== 'number' ? other : other * alpha);
  }
  sub(other: Tensor | Scalar): Tensor {
    return this.binaryOp('sub', other);
  }
  mul(other: Tensor | Scalar): Tensor {
    return this.binaryOp('mul', other);
  }
  div(other: Tensor | Scalar): Tensor {
    return this.binaryOp('div', other);
  }
  pow(other: Tensor | Scalar): Tensor {
    return this.binaryOp('pow', other);
  }
  remainder(other: Tensor | Scalar): Tensor {
    return this.binaryOp('remainder', other);
  }
  /** s - this */
  rsub(s: Scalar): Tensor {
    return new Tensor(native.scalar(SCALAR.rsub!, this.id, s));
  }
  /** s / this */
  rdiv(s: Scalar): Tensor {
    return new Tensor(native.scalar(SCALAR.rdiv!, this.id, s));
  }
  maximum(other: Tensor): Tensor {
    return this.binaryOp('maximum', other);
  }
  minimum(other: Tensor): Tensor {
    return this.binaryOp('minimum', other);
  }
  clamp(min: Scalar | null, max: Scalar | null = null): Tensor {
    return new Tensor(native.clamp(this.id, min, max));
  }
  eq(other: Tensor | Scalar): Tensor {
    return this.binaryOp('eq', other);
  }
  ne(other: Tensor | Scalar): Tensor {
    return this.binaryOp('ne', other);
  }
  lt(other: Tensor | Scalar): Tensor {
    return this.binaryOp('lt', other);
  }
  le(other: Tensor | Scalar): Tensor {
    return this.binaryOp('le', other);
  }
  gt(other: Tensor | Scalar): Tensor {
    return this.binaryOp('gt', other);
  }
  ge(other: Tensor | Scalar): Tensor {
    return this.binaryOp('ge', other);
  }
  logicalAnd(other: Tensor): Tensor {
    return this.binaryOp('logicalAnd', other);
  }
  logicalOr(other: Tensor): Tensor {
    return this.binaryOp('logicalOr', other);
  }
  logicalNot(): Tensor {
    return this.unaryOp('logicalNot');
  }
  neg(): Tensor {
    return this.unaryOp('neg');
  }
  abs(): Tensor {
    return this.unaryOp('abs');
  }
  exp(): Tensor {
    return this.unaryOp('exp');
  }
  log(): Tensor {
    return this.unaryOp('log');
  }
  log1p(): Tensor {
    return this.unaryOp('log1p');
  }
  sqrt(): Tensor {
    return this.unaryOp('sqrt');
  }
  rsqrt(): Tensor {
    return this.unaryOp('rsqrt');
  }
  tanh(): Tensor {
    return this.unaryOp('tanh');
  }
  sigmoid(): Tensor {
    return this.unaryOp('sigmoid');
  }
  silu(): Tensor {
    return this.unaryOp('silu');
  }
  relu(): Tensor {
    return this.unaryOp('relu');
  }
  gelu(approximate: 'none' | 'tanh' = 'none'): Tensor {
    return this.unaryOp(approximate === 'tanh' ? 'geluTanh' : 'gelu');
  }
  sin(): Tensor {
    return this.unaryOp('sin');
  }
  cos(): Tensor {
    return this.unaryOp('cos');
  }
  floor(): Tensor {
    return this.unaryOp('floor');
  }
  ceil(): Tensor {
    return this.unaryOp('ceil');
  }
  round(): Tensor {
    return this.unaryOp('round');
  }
  sign(): Tensor {
    return this.unaryOp('sign');
  }
  reciprocal(): Tensor {
    return this.unaryOp('reciprocal');
  }
  square(): Tensor {
    return this.unaryOp('square');
  }
  erf(): Tensor {
    return this.unaryOp('erf');
  }
  isnan(): Tensor {
    return this.unaryOp('isnan');
  }
  isfinite(): Tensor {
    return this.unaryOp('isfinite');
  }
  zerosLike(): Tensor {
    return this.unaryOp('zerosLike');
  }
  onesLike(): Tensor {
    return this.unaryOp('onesLike');
  }
  fullLike(value: Scalar): Tensor {
    return new Tensor(native.scalar(SCALAR.fullLike!, this.id, value));
  }

  // ---- matrix products ------------------------------------------------------------------------
  matmul(other: Tensor): Tensor {
    return this.binaryOp('matmul', other);
  }
  bmm(other: Tensor): Tensor {
    return this.binaryOp('bmm', other);
  }
  outer(other: Tensor): Tensor {
    return this.binaryOp('outer', other);
  }

  // ---- reductions -----------------------------------------------------------------------------
  private reduceOp(op: string, dims: number | number[] | undefined, keepdim: boolean): Tensor {
    return new Tensor(
      native.reduce(
        REDUCE[op]!,
        this.id,
        dims === undefined ? null : typeof dims === 'number' ? [dims] : dims,
        keepdim,
      ),
    );
  }
  sum(dims?: number | number[], keepdim = false): Tensor {
    return this.reduceOp('sum', dims, keepdim);
  }
  mean(dims?: number | number[], keepdim = false): Tensor {
    return this.reduceOp('mean', dims, keepdim);
  }
  amax(dims?: number | number[], keepdim = false): Tensor {
    return this.reduceOp('amax', dims, keepdim);
  }
  amin(dims?: number | number[], keepdim = false): Tensor {
    return this.reduceOp('amin', dims, keepdim);
  }
  logsumexp(dims: number | number[], keepdim = false): Tensor {
    return this.reduceOp('logsumexp', dims, keepdim);
  }
  all(dim?: number, keepdim = false): Tensor {
    return this.reduceOp('all', dim, keepdim);
  }
  any(dim?: number, keepdim = false): Tensor {
    return this.reduceOp('any', dim, keepdim);
  }
  max(dim: number, keepdim = false): { values: Tensor; indices: Tensor } {
    const [v, i] = native.maxDim(this.id, dim, keepdim);
    return { values: new Tensor(v), indices: new Tensor(i) };
  }
  min(dim: number, keepdim = false): { values: Tensor; indices: Tensor } {
    const [v, i] = native.minDim(this.id, dim, keepdim);
    return { values: new Tensor(v), indices: new Tensor(i) };
  }
  argmax(dim?: number, keepdim = false): Tensor {
    return new Tensor(native.argmax(this.id, dim ?? null, keepdim));
  }
  norm(p = 2, dims?: number | number[], keepdim = false): Tensor {
    return new Tensor(
      native.norm(this.id, p, dims === undefined ? null : typeof dims === 'number' ? [dims] : dims, keepdim),
    );
  }
  var(dims?: number | number[], unbiased = true, keepdim = false): Tensor {
    return new Tensor(
      native.variance(this.id, dims === undefined ? null : typeof dims === 'number' ? [dims] : dims, unbiased, keepdim),
    );
  }
  cumsum(dim: number): Tensor {
    return new Tensor(native.cumsum(this.id, dim));
  }

  // ---- nn -------------------------------------------------------------------------------------
  softmax(dim: number, dtype?: DType): Tensor {
    return new Tensor(native.softmax(this.id, dim, dtype ? dtypeCode(dtype) : null));
  }
  logSoftmax(dim: number, dtype?: DType): Tensor {
    return new Tensor(native.logSoftmax(this.id, dim, dtype ? dtypeCode(dtype) : null));
  }
  dropout(p: number, training: boolean): Tensor {
    return p === 0 || !training ? this : new Tensor(native.dropout(this.id, p, training));
  }
  topk(k: number, dim = -1, largest = true, sorted = true): { values: Tensor; indices: Tensor } {
    const [v, i] = native.topk(this.id, k, dim, largest, sorted);
    return { values: new Tensor(v), indices: new Tensor(i) };
  }
  sort(dim = -1, descending = false, stable = true): { values: Tensor; indices: Tensor } {
    const [v, i] = native.sort(this.id, dim, descending, stable);
    return { values: new Tensor(v), indices: new Tensor(i) };
  }
  argsort(dim = -1, descending = false): Tensor {
    const [v, i] = native.sort(this.id, dim, descending, true);
    native.free(v);
    return new Tensor(i);
  }
  oneHot(numClasses: number): Tensor {
    return new Tensor(native.oneHot(this.id, numClasses));
  }

  // ---- in place (optimizers, caches, init; not on tensors autograd is tracking) ------------------
  zero_(): this {
    native.inplace(INPLACE.zero_!, this.id);
    return this;
  }
  fill_(value: Scalar): this {
    native.inplace(INPLACE.fill_!, this.id, value);
    return this;
  }
  copy_(src: Tensor): this {
    native.inplace(INPLACE.copy_!, this.id, src.id);
    return this;
  }
  add_(other: Tensor | Scalar, alpha = 1): this {
    if (typeof other === 'number') native.inplace(INPLACE.addScalar_!, this.id, other * alpha);
    else native.inplace(INPLACE.add_!, this.id, other.id, alpha);
    return this;
  }
  sub_(other: Tensor): this {
    native.inplace(INPLACE.sub_!, this.id, other.id);
    return this;
  }
  mul_(other: Tensor | Scalar): this {
    if (typeof other === 'number') native.inplace(INPLACE.mulScalar_!, this.id, other);
    else native.inplace(INPLACE.mul_!, this.id, other.id);
    return this;
  }
  div_(other: Tensor): this {
    native.inplace(INPLACE.div_!, this.id, other.id);
    return this;
  }
  uniform_(low: number, high: number): this {
    native.uniform_(this.id, low, high);
    return this;
  }
  normal_(mean: number, std: number): this {
    native.normal_(this.id, mean, std);
    return this;
  }

  // ---- autograd -------------------------------------------------------------------------------
  requiresGrad_(on = true): this {
    native.setRequiresGrad(this.id, on);
    return this;
  }
  /** Back-propagates from this tensor (a scalar, or give the upstream gradient). */
  backward(gradient?: Tensor, retainGraph = false): void {
    native.backward([this.id], [gradient ? gradient.id : null], retainGraph);
  }
  /** The accumulated gradient (a new handle each call), or null. */
  get grad(): Tensor | null {
    const g = native.grad(this.id);
    return g === null ? null : new Tensor(g);
  }
  set grad(g: Tensor | null) {
    native.setGrad(this.id, g ? g.id : null);
  }
  get gradFnName(): string | null {
    return native.gradFnName(this.id);
  }
}
