/**
 * The mixlora library: everything the command line does, for TypeScript programs.
 *
 * The application API comes first: {@link LLM} (load a model with adapters; generate, stream, chat, score),
 * {@link startTraining} (train in a process of its own, with events and an AbortSignal) and {@link evaluate}.
 * The low-level API below it (tensors, models, adapters, the trainer) is what those are built on.
 *
 * @packageDocumentation
 */

// The application API.
export {
  LLM,
  type LLMLoadOptions,
  type GenerationOptions,
  type ScoreOptions,
  type ScoredText,
  type TextScore,
  type ChatMessage,
} from './api/llm.js';
export {
  startTraining,
  TrainingRun,
  type TrainingOptions,
  type TrainingConfigObject,
  type TrainingRunEvents,
  type TrainingEvent,
  type TrainingStartEvent,
  type TrainingStepEvent,
  type TrainingEvalEvent,
  type TrainingCheckpointEvent,
  type TrainingLogEvent,
  type TrainingDoneEvent,
  type TrainingResult,
} from './api/training.js';
export {
  evaluate,
  type EvaluateOptions,
  type EvaluationTask,
  type EvaluationReport,
  type ExpertLoadByLayer,
} from './api/evaluate.js';
export { stories260K, bundledDataFile, type BundledModel } from './api/assets.js';

// The low-level API.
export * as T from './tensor/index.js';
export { AdamW, AdamW8bit, SGD, clipGradNorm, type Optimizer } from './optim/index.js';

export { loadModel, type LoadedModel, type LoadOptions } from './models/load.js';
export { CausalLM, type ForwardOptions } from './models/causal-lm.js';
export { parseModelConfig, readModelConfig, type ModelConfig } from './models/config.js';
export { KVCache } from './models/kvcache.js';
export { plainHooks, type ForwardHooks } from './models/hooks.js';
export { llamaConfig, randomModel } from './models/random.js';
export { convertLlama2c } from './models/convert.js';
export { frozenLinear, quantizationOf, residentBytes } from './models/frozen-linear.js';
export { QuantizedWeight } from './quant/quantized-weight.js';
export { QUANT_FORMATS, parseQuantFormat, type QuantFormat } from './quant/format.js';
export { TextTokenizer } from './tokenizer/tokenizer.js';
export { generate, generateSteps, type GenerateOptions } from './generate/generate.js';
export { perplexity, readPerplexityData } from './eval/perplexity.js';

export { Adapter } from './adapters/adapter.js';
export { AdapterBatch, type RowRange } from './adapters/batch.js';
export { parseAdapterConfig, exportAdapterConfig, type AdapterConfig } from './adapters/config.js';
export { loadAdapter, saveAdapter } from './adapters/io.js';
export { adapterStateDict } from './adapters/state-dict.js';
export { auxLoss } from './adapters/aux-loss.js';
export { mergeIntoWeights } from './adapters/merge.js';
export { inspectAdapter } from './adapters/inspect.js';

export { readTrainConfig, type TrainConfig } from './train/config.js';
export { train, type TrainResult } from './train/trainer.js';
export { loadTask, TASKS, type EvalTask } from './eval/tasks.js';
export { evaluateTask, type EvalTarget, type TaskResult } from './eval/scoring.js';
export { expertLoad } from './eval/expert-load.js';

export { loadAll as readSafetensors, saveSafetensors } from './io/safetensors.js';
export { readTorchCheckpoint } from './io/torch-zip.js';
export { UserError } from './util/errors.js';
