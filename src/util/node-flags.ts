// The Node (V8) flags mixlora's processes run with: bin/mixlora's first line passes them, and whatever
// starts another mixlora process (`mixlora launch`'s ranks, the benchmarks) passes them on.
//
// --single-threaded-gc: V8 collects garbage on the main thread only. By default it also marks and sweeps
// on helper threads while JavaScript runs, and those threads take cores from libtorch's OpenMP threads
// in the middle of a parallel product, which then waits for its slowest thread. On the 2-core VM we
// measured, `serve` with 8 clients went from 235 to 261 tokens/s (its 8-row decode steps from 31-34 to
// 26-29 ms) and a MixLoRA training step of the bench preset from 1.89-1.98 s to 1.72-1.81 s; the
// collector's own work, now on the main thread, costs less than that.
export const NODE_FLAGS: readonly string[] = ['--single-threaded-gc'];
