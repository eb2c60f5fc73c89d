// Evaluation split across the ranks of a data-parallel job: rank r scores a contiguous block of each
// task's items, and the counts (correct answers, routed slots) and per-item scores are gathered, so
// every rank ends with the same totals one process computes. The items of a block are batched as one
// process would batch them from that point, so the scores agree to float precision (padding differs).
import type { Group } from '../distributed/group.js';
import type { CausalLM } from '../models/causal-lm.js';
import type { TextTokenizer } from '../tokenizer/tokenizer.js';
import {
  evaluateTask,
  type EvalTarget,
  type ExpertCounts,
  type ItemScores,
  type ScoringMethod,
  type TaskResult,
} from './scoring.js';
import type { EvalTask } from './tasks.js';

/** Items [start, end) of `n` for `rank` of `worldSize`: blocks differ in size by at most one. */
export function shardRange(n: number, rank: number, worldSize: number): [number, number] {
  return [Math.floor((rank * n) / worldSize), Math.floor(((rank + 1) * n) / worldSize)];
}

interface ShardOutcome {
  correct: number[];
  correctNorm: number[];
  counts: [string, number[][]][];
  samples: ItemScores[];
}

export function evaluateTaskSharded(
  g: Group,
  model: CausalLM,
  tok: TextTokenizer,
  targets: EvalTarget[],
  task: EvalTask,
  opts: { method: ScoringMethod; batchSize: number; onProgress?: (done: number) => void; keepSamples: boolean },
): { results: TaskResult[]; counts: ExpertCounts; samples: ItemScores[] } {
  const [start, end] = shardRange(task.items.length, g.rank, g.worldSize);
  const samples: ItemScores[] = [];
  const local = evaluateTask(
    model,
    tok,
    targets,
    { ...task, items: task.items.slice(start, end) },
    {
      method: opts.method,
      batchSize: opts.batchSize,
      onProgress: opts.onProgress,
      onItem: opts.keepSamples ? (s) => samples.push({ ...s, item: s.item + start }) : undefined,
    },
  );
  const n = end - start;
  // Accuracies times the block's size are the counts of correct answers (integers).
  const outcome: ShardOutcome = {
    correct: local.results.map((result) => (n > 0 ? Math.round(result.accuracy * n) : 0)),
    correctNorm: local.results.map((result) => (n > 0 ? Math.round((result.acc_norm ?? 0) * n) : 0)),
    counts: [...local.counts],
    samples,
  };
  const all = g.allGatherJson(outcome);
  const total = task.items.length;
  const counts: ExpertCounts = new Map();
  for (const o of all)
    for (const [name, layers] of o.counts) {
      const sum = counts.get(name);
      if (!sum)
        counts.set(
          name,
          layers.map((l) => l.slice()),
        );
      else layers.forEach((l, i) => l.forEach((c, e) => (sum[i]![e]! += c)));
    }
  const results = targets.map((t, i) => ({
    adapter: t.name,
    task: task.name,
    n: total,
    accuracy: all.reduce((s, o) => s + o.correct[i]!, 0) / total,
    ...(opts.method === 'loglik' ? { acc_norm: all.reduce((s, o) => s + o.correctNorm[i]!, 0) / total } : {}),
  }));
  return { results, counts, samples: all.flatMap((o) => o.samples) };
}
