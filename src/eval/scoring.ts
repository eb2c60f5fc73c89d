// Scoring evaluation items with several adapters (and the bare model) in the same fused batches.
//  - choice (the paper's / MoE-PEFT's method): one forward pass over the context; at its last token
//    compare the logits of the candidates' tokens (the token where the candidate continuations first
//    differ; for labels like "answer1".."answer4" or "true"/"false" that is each label's last token);
//  - loglik (lm-eval style): the log-likelihood of each whole continuation; `acc` takes the largest,
//    `acc_norm` the largest per character.
import { tensor } from '../tensor/create.js';
import { noGrad } from '../tensor/autograd.js';
import { tidy } from '../tensor/scope.js';
import type { CausalLM } from '../models/causal-lm.js';
import type { TextTokenizer } from '../tokenizer/tokenizer.js';
import type { Adapter } from '../adapters/adapter.js';
import { AdapterBatch, type RowRange } from '../adapters/batch.js';
import { packIds, rowRanges } from '../data/packing.js';
import type { EvalItem, EvalTask, Scoring } from './tasks.js';

export type ScoringMethod = 'choice' | 'loglik';
export interface EvalTarget {
  name: string;
  adapter: Adapter | null;
}
export interface TaskResult {
  adapter: string;
  task: string;
  n: number;
  accuracy: number;
  acc_norm?: number;
}
/** One item's scores for one target: the candidates' log-probabilities (choice) or the choices'
 * summed log-likelihoods (loglik). */
export interface ItemScores {
  adapter: string;
  task: string;
  item: number;
  gold: number;
  scores: number[];
}
type OnItem = (target: number, item: number, scores: number[]) => void;

/** Routed slots per layer and expert, for each MixLoRA target. */
export type ExpertCounts = Map<string, number[][]>;

interface ChoiceRow {
  ids: number[];
  candidates: number[];
}
interface LoglikRow {
  ids: number[];
  from: number;
  chars: number;
}

function commonPrefix(a: number[], b: number[]): number {
  let i = 0;
  while (i < a.length && i < b.length && a[i] === b[i]) i++;
  return i;
}

/** The shared context tokens and each candidate's deciding token. */
export function choiceRow(tok: TextTokenizer, s: Scoring): ChoiceRow {
  const fulls = s.continuations.map((c) => tok.encode(s.context + c));
  let shared = Math.min(...fulls.map((f) => f.length - 1));
  for (const f of fulls) shared = Math.min(shared, commonPrefix(fulls[0]!, f));
  shared = Math.max(shared, 1);
  return { ids: fulls[0]!.slice(0, shared), candidates: fulls.map((f) => f[shared] ?? f[f.length - 1]!) };
}

/** Each candidate's full sequence and where its continuation starts. */
export function loglikRows(tok: TextTokenizer, s: Scoring): LoglikRow[] {
  const ctx = tok.encode(s.context);
  return s.continuations.map((c) => {
    const ids = tok.encode(s.context + c);
    return { ids, from: Math.max(1, Math.min(commonPrefix(ids, ctx), ids.length - 1)), chars: Math.max(1, c.length) };
  });
}

function addCounts(into: ExpertCounts, batch: AdapterBatch, ranges: RowRange[], targets: EvalTarget[]): void {
  ranges.forEach((range, i) => {
    const counts = range.adapter ? batch.expertCounts.get(range.adapter) : undefined;
    if (!counts) return;
    const name = targets[i]!.name;
    const perLayer = into.get(name) ?? counts.map((l) => l.map(() => 0));
    counts.forEach((l, layer) =>
      l.forEach((c, e) => {
        perLayer[layer]![e]! += c;
      }),
    );
    into.set(name, perLayer);
  });
}

/** One fused forward over rows (grouped by target): log-probabilities, at each requested flat position
 * (row · T + t), of the requested token ids; [positions][tokens]. Only those leave libtorch. */
function forwardAt(
  model: CausalLM,
  targets: EvalTarget[],
  rowsPerTarget: number[][][],
  want: (row: number, T: number) => { at: number; tokens: number[] }[],
  counts: ExpertCounts,
): number[][] {
  return noGrad(() =>
    tidy(() => {
      const rows = rowsPerTarget.flat();
      const ranges: RowRange[] = rowRanges(rowsPerTarget.map((targetRows) => targetRows.length)).map((range, i) => ({
        ...range,
        adapter: targets[i]!.adapter,
      }));
      const batch = new AdapterBatch(ranges, { training: false, record: 'counts' });
      const { ids, mask, T } = packIds(rows, { pad: 0, device: model.device }); // [B, T]
      const requests = rows.flatMap((_, i) => want(i, T));
      const K = Math.max(...requests.map((q) => q.tokens.length));
      const at = tensor(
        requests.map((q) => q.at),
        { dtype: 'int64', device: model.device },
      );
      const tokens = tensor(
        requests.map((q) => [...q.tokens, ...Array<number>(K - q.tokens.length).fill(q.tokens[0]!)]),
        { dtype: 'int64', device: model.device },
      );
      const logits = model.forward(ids, { attentionMask: mask, hooks: batch, at }); // [N, V]
      addCounts(counts, batch, ranges, targets);
      batch.dispose();
      return logits.logSoftmax(-1).gather(1, tokens).toList() as number[][]; // [N, K]
    }),
  );
}

export function evaluateTask(
  model: CausalLM,
  tok: TextTokenizer,
  targets: EvalTarget[],
  task: EvalTask,
  opts: {
    method: ScoringMethod;
    batchSize: number;
    onProgress?: (done: number) => void;
    /** Called with every item's scores (for --samples). */
    onItem?: (s: ItemScores) => void;
  },
): { results: TaskResult[]; counts: ExpertCounts } {
  const counts: ExpertCounts = new Map();
  const correct = targets.map(() => 0);
  const correctNorm = targets.map(() => 0);
  const perItemRows =
    opts.method === 'choice' ? 1 : Math.max(...task.items.map((it) => it.loglik.continuations.length));
  const itemsPerBatch = Math.max(1, Math.floor(opts.batchSize / (targets.length * perItemRows)));
  for (let s = 0; s < task.items.length; s += itemsPerBatch) {
    const items = task.items.slice(s, s + itemsPerBatch);
    const onItem: OnItem | undefined = opts.onItem
      ? (t, k, scores) =>
          opts.onItem!({ adapter: targets[t]!.name, task: task.name, item: s + k, gold: items[k]!.gold, scores })
      : undefined;
    if (opts.method === 'choice') scoreChoice(model, tok, targets, items, counts, correct, onItem);
    else scoreLoglik(model, tok, targets, items, counts, correct, correctNorm, onItem);
    opts.onProgress?.(Math.min(s + itemsPerBatch, task.items.length));
  }
  const n = task.items.length;
  return {
    results: targets.map((t, i) => ({
      adapter: t.name,
      task: task.name,
      n,
      accuracy: correct[i]! / n,
      ...(opts.method === 'loglik' ? { acc_norm: correctNorm[i]! / n } : {}),
    })),
    counts,
  };
}

function argmax(xs: number[]): number {
  let best = 0;
  for (let i = 1; i < xs.length; i++) if (xs[i]! > xs[best]!) best = i;
  return best;
}

function scoreChoice(
  model: CausalLM,
  tok: TextTokenizer,
  targets: EvalTarget[],
  items: EvalItem[],
  counts: ExpertCounts,
  correct: number[],
  onItem?: OnItem,
): void {
  const rows = items.map((it) => choiceRow(tok, it.choice));
  const logp = forwardAt(
    model,
    targets,
    targets.map(() => rows.map((row) => row.ids)),
    (i, T) => {
      const row = rows[i % rows.length]!;
      return [{ at: i * T + row.ids.length - 1, tokens: row.candidates }];
    },
    counts,
  );
  targets.forEach((_, t) =>
    items.forEach((it, k) => {
      const lp = logp[t * items.length + k]!;
      const scores = rows[k]!.candidates.map((_, c) => lp[c]!);
      onItem?.(t, k, scores);
      if (argmax(scores) === it.gold) correct[t]!++;
    }),
  );
}

function scoreLoglik(
  model: CausalLM,
  tok: TextTokenizer,
  targets: EvalTarget[],
  items: EvalItem[],
  counts: ExpertCounts,
  correct: number[],
  correctNorm: number[],
  onItem?: OnItem,
): void {
  const perItem = items.map((it) => loglikRows(tok, it.loglik));
  const flat = perItem.flat();
  // Position t - 1 predicts token t, for every continuation token t.
  const positionsOf = (candidate: LoglikRow, row: number, T: number) =>
    Array.from({ length: candidate.ids.length - candidate.from }, (_, j) => ({
      at: row * T + candidate.from + j - 1,
      tokens: [candidate.ids[candidate.from + j]!],
    }));
  const logp = forwardAt(
    model,
    targets,
    targets.map(() => flat.map((row) => row.ids)),
    (i, T) => positionsOf(flat[i % flat.length]!, i, T),
    counts,
  );
  let cursor = 0;
  targets.forEach((_, t) => {
    perItem.forEach((rows, k) => {
      const scores = rows.map((row) => {
        let sum = 0;
        for (let j = row.from; j < row.ids.length; j++) sum += logp[cursor++]![0]!;
        return sum;
      });
      onItem?.(t, k, scores);
      if (argmax(scores) === items[k]!.gold) correct[t]!++;
      if (argmax(scores.map((x, c) => x / rows[c]!.chars)) === items[k]!.gold) correctNorm[t]!++;
    });
  });
}
