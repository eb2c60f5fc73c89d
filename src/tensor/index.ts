// The tensor engine: TypeScript tensors and autograd on libtorch.
export { Tensor, type Device, type Scalar } from './tensor.js';
export { type DType, type TypedArray, isFloating, ITEM_SIZE, isDType } from './dtype.js';
export * from './create.js';
export * from './ops.js';
export * from './autograd.js';
export * from './runtime.js';
export { tidy, keep, dispose, collectTensors, liveTensors, externalBytes } from './scope.js';
