export { AdamW, type AdamWOptions } from './adamw.js';
export { AdamW8bit, adamw8bitMaps, BLOCK_8BIT, MIN_8BIT_SIZE, type AdamW8bitOptions } from './adamw-8bit.js';
export { SGD, type SGDOptions } from './sgd.js';
export { clipGradNorm, type Optimizer, type OptimizerState } from './optimizer.js';
