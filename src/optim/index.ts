export { AdamW, type AdamWOptions } from './adamw.js';
export { SGD, type SGDOptions } from './sgd.js';
export { clipGradNorm, type Optimizer, type OptimizerState } from './optimizer.js';
