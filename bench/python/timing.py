"""Timing shared by the PyTorch baselines: the median of `reps` calls after `warmup` calls, in ms."""
import statistics
import time


def median_ms(fn, reps, warmup):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)
