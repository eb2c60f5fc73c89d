// Learning-rate schedules as Hugging Face's get_*_schedule_with_warmup: a multiplier of the base lr for
// the step about to be taken (0-based), linear warm-up, then constant, linear decay or cosine decay.
import type { SchedulerName } from './config.js';

export function lrMultiplier(kind: SchedulerName, step: number, total: number, warmup: number): number {
  if (step < warmup) return step / Math.max(1, warmup);
  if (kind === 'constant') return 1;
  const progress = (step - warmup) / Math.max(1, total - warmup);
  if (kind === 'linear') return Math.max(0, 1 - progress);
  return Math.max(0, 0.5 * (1 + Math.cos(Math.PI * progress)));
}

export function warmupSteps(total: number, steps: number | null, ratio: number): number {
  return steps ?? Math.ceil(total * ratio);
}
