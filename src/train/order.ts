// The order in which an adapter sees its examples: per epoch a seeded shuffle; optionally grouped by
// length (examples of similar length share a batch, so padding stays small), the batch with the
// longest example first (a run that would run out of memory does so at once). The order of any epoch
// is a pure function of (seed, adapter, epoch), so resuming needs only the step number.
import { Rng } from '../util/random.js';

export class DataOrder {
  readonly stepsPerEpoch: number;
  private cacheEpoch = -1;
  private cache: number[][] = [];

  /** `stream` separates the orders of adapters sharing a seed (the trainer derives it from the name). */
  constructor(
    private readonly lengths: number[],
    private readonly batchSize: number,
    private readonly seed: number,
    private readonly stream: number,
    private readonly groupByLength: boolean,
  ) {
    this.stepsPerEpoch = Math.ceil(lengths.length / batchSize);
  }

  /** Example indices of the step batch at `step` (0-based, over all epochs). */
  batch(step: number): number[] {
    const epoch = Math.floor(step / this.stepsPerEpoch);
    if (epoch !== this.cacheEpoch) {
      this.cache = this.epochBatches(epoch);
      this.cacheEpoch = epoch;
    }
    return this.cache[step % this.stepsPerEpoch]!;
  }

  private epochBatches(epoch: number): number[][] {
    const rng = new Rng([this.seed >>> 0, this.stream >>> 0, epoch + 1, 0x9e3779b9]);
    for (let i = 0; i < 8; i++) rng.next();
    const idx = rng.shuffle(Array.from(this.lengths, (_, i) => i));
    const chunk = (a: number[]) =>
      Array.from({ length: Math.ceil(a.length / this.batchSize) }, (_, i) =>
        a.slice(i * this.batchSize, (i + 1) * this.batchSize),
      );
    if (!this.groupByLength) return chunk(idx);
    const mega = this.batchSize * 50;
    const batches: number[][] = [];
    for (let i = 0; i < idx.length; i += mega) {
      const part = idx.slice(i, i + mega).sort((a, b) => this.lengths[b]! - this.lengths[a]! || a - b);
      batches.push(...chunk(part));
    }
    rng.shuffle(batches);
    const maxLen = this.lengths.reduce((a, b) => Math.max(a, b), 0);
    const longest = batches.findIndex((b) => b.some((i) => this.lengths[i] === maxLen));
    if (longest > 0) [batches[0], batches[longest]] = [batches[longest]!, batches[0]!];
    return batches;
  }
}
