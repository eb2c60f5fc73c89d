// One API request's sequences in the engine: its prompts × n choices, their texts, and when they end.
import type { TextTokenizer } from '../tokenizer/tokenizer.js';
import type { Engine, SequenceHandle } from './engine.js';
import type { Lease } from './registry.js';
import type { SamplingParams, TokenConstraint } from './sampling.js';
import { ChoiceText } from './choice.js';

export interface JobSpec {
  prompts: number[][];
  n: number;
  maxTokens: number;
  sampling: SamplingParams;
  stops: string[];
  lease: Lease & { clientGone?: boolean };
  /** Report each prompt token's log-probability with this many alternatives (echo); null: none. */
  promptLogprobs?: number | null;
  /** A fresh constraint for each choice (structured output); none when absent. */
  constraint?: (() => TokenConstraint) | null;
}

export interface JobEvents {
  /** A choice's prompt was scored (promptLogprobs): its promptScores are set. */
  onPrompt?(index: number): void;
  /** A choice got tokens (its text may have grown). */
  onProgress?(index: number): void;
  /** A choice ended (finishReason set). */
  onChoiceEnd?(index: number): void;
}

export class Job {
  readonly choices: ChoiceText[] = [];
  readonly done: Promise<void>;
  private readonly handles: SequenceHandle[];

  /** Submits every sequence; throws (429, 503) before anything runs when the engine refuses them. */
  constructor(engine: Engine, tokenizer: TextTokenizer, stopIds: number[], spec: JobSpec, events: JobEvents = {}) {
    let remaining = spec.prompts.length * spec.n;
    let resolve!: () => void;
    this.done = new Promise<void>((settle) => (resolve = settle));
    const notText = [...stopIds, ...(spec.sampling.stopTokenIds ?? [])];
    // One constraint per choice (none when only the prompt is scored); all freed if one cannot be made.
    const make = spec.constraint && spec.maxTokens > 0 ? spec.constraint : null;
    const constraints: TokenConstraint[] = [];
    try {
      if (make) for (let i = 0; i < spec.prompts.length * spec.n; i++) constraints.push(make());
    } catch (e) {
      for (const c of constraints) c.dispose();
      throw e;
    }
    const specs = spec.prompts.flatMap((prompt, p) =>
      Array.from({ length: spec.n }, (_, k) => {
        const index = p * spec.n + k;
        const choice = new ChoiceText(tokenizer, prompt, spec.stops, notText, spec.sampling.minTokens ?? 0);
        this.choices.push(choice);
        return {
          prompt,
          maxTokens: spec.maxTokens,
          promptLogprobs: spec.promptLogprobs ?? null,
          constraint: constraints[index] ?? null,
          modelName: spec.lease.model.name,
          adapter: spec.lease.model.adapter,
          // Each choice draws from its own stream: seed, seed + 1, ...
          sampling: { ...spec.sampling, seed: spec.sampling.seed === null ? null : spec.sampling.seed + index },
          sink: {
            onPrompt: (scores: NonNullable<ChoiceText['promptScores']>) => {
              choice.promptScores = scores;
              events.onPrompt?.(index);
            },
            onToken: (c: Parameters<ChoiceText['push']>[0]) => {
              const stop = choice.push(c);
              events.onProgress?.(index);
              return stop;
            },
            onFinish: (reason: ChoiceText['finishReason'] & string, error?: Error) => {
              choice.finish(reason, error ?? null);
              events.onChoiceEnd?.(index);
              if (--remaining === 0) resolve();
            },
          },
        };
      }),
    );
    try {
      this.handles = engine.submit(specs);
    } catch (e) {
      // Refused (429, 503): the engine took nothing, so the constraints are ours to free.
      for (const c of constraints) c.dispose();
      throw e;
    }
  }

  /** Ends every sequence at the engine's next step (the client went away). */
  cancel(): void {
    for (const h of this.handles) h.cancel();
  }

  get completionTokens(): number {
    return this.choices.reduce((n, c) => n + c.ids.length, 0);
  }
}
