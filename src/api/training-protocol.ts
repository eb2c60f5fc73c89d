// What a library training run reports (its events and result), and the messages between the application's
// process (training.ts) and the training process (training-child.ts).

/** The run has read its config and is loading the model and data. */
export interface TrainingStartEvent {
  /** Which event. */
  type: 'start';
  /** The run's output_dir (adapters, checkpoints, metrics.jsonl). */
  outputDir: string;
  /** The names of the adapters it trains. */
  adapters: string[];
}

/** An optimizer step of one adapter: its line of metrics.jsonl. */
export interface TrainingStepEvent {
  /** Which event. */
  type: 'step';
  /** The adapter's name (the config's `name`). */
  adapter: string;
  /** Optimizer steps taken by this adapter (1 after the first). */
  step: number;
  /** The adapter's steps in all (num_epochs or max_steps). */
  totalSteps: number;
  /** Epochs done: step / steps per epoch. */
  epoch: number;
  /** Mean cross-entropy of the step's scored tokens. */
  loss: number;
  /** MixLoRA's router auxiliary loss (null for adapters without a router). */
  aux: number | null;
  /** Learning rate of the step. */
  lr: number;
  /** Tokens scored in the step. */
  tokens: number;
  /** Input tokens per second of the step's forward and backward passes. */
  tokensPerSecond: number;
  /** Gradient norm before clipping (null without max_grad_norm). */
  gradNorm: number | null;
}

/** An evaluation during training (the config's `eval:` block): its line of metrics.jsonl. */
export interface TrainingEvalEvent {
  /** Which event. */
  type: 'eval';
  /** The adapter evaluated. */
  adapter: string;
  /** Its optimizer steps when evaluated. */
  step: number;
  /** Its epochs when evaluated. */
  epoch: number;
  /** The measured values (held-out loss, task accuracies, whether it is the best so far...). */
  metrics: Record<string, number | string | boolean>;
}

/** A complete checkpoint was written (a run stopped after it continues from it with `--resume`). */
export interface TrainingCheckpointEvent {
  /** Which event. */
  type: 'checkpoint';
  /** The checkpoint's folder (output_dir/checkpoints/checkpoint-<fused step>). */
  path: string;
}

/** A line the trainer says (resumed from..., an adapter done and saved...). */
export interface TrainingLogEvent {
  /** Which event. */
  type: 'log';
  /** The line, without its newline. */
  message: string;
}

/** The run ended: completed, or stopped by its AbortSignal. */
export interface TrainingDoneEvent {
  /** Which event. */
  type: 'done';
  /** How the run ended (also `run.result`'s value). */
  result: TrainingResult;
}

/** Everything a run reports, in order; `done` is the last. */
export type TrainingEvent =
  | TrainingStartEvent
  | TrainingStepEvent
  | TrainingEvalEvent
  | TrainingCheckpointEvent
  | TrainingLogEvent
  | TrainingDoneEvent;

/** How a training run ended. */
export interface TrainingResult {
  /** `completed`: every adapter trained and saved; `aborted`: stopped by the signal (see `checkpoint`). */
  status: 'completed' | 'aborted';
  /** Where each adapter trained to the end was saved (by name); empty when aborted. */
  adapters: Record<string, string>;
  /** The run's output_dir. */
  outputDir: string;
  /** Its metrics.jsonl (a line per optimizer step and evaluation). */
  metricsFile: string;
  /** Loss-curve (and eval) charts written at the end. */
  charts: string[];
  /**
   * The newest complete checkpoint, or null (a completed run with save_steps 0, or one stopped before its
   * first optimizer step): an aborted run continues from it, exactly as if never stopped, with
   * `startTraining(config, { resume: true })` or `mixlora train CONFIG --resume`.
   */
  checkpoint: string | null;
  /** The checkpoint this run continued from (resume), or null. */
  resumedFrom: string | null;
}

export type ParentMessage =
  | {
      type: 'start';
      /** A config file, or null for `value` (a config object whose relative paths are relative to `cwd`). */
      file: string | null;
      value: unknown;
      cwd: string;
      resume: boolean;
      /** The file whose existence asks the run to stop. */
      stopFile: string;
    }
  | { type: 'abort' };

export type ChildMessage =
  { type: 'event'; event: TrainingEvent } | { type: 'error'; name: string; message: string; stack: string };
