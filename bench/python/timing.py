"""Timing shared by the PyTorch baselines: the median of `reps` calls after `warmup` calls, in ms; or the
rate of calls over a time budget (the matrix-product probe)."""
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


def calls_per_s(fn, seconds, min_reps):
    """One warm-up call, then calls for about `seconds` (at least `min_reps`): calls per second."""
    fn()
    reps, t0 = 0, time.perf_counter()
    while True:
        fn()
        reps += 1
        elapsed = time.perf_counter() - t0
        if elapsed >= seconds and reps >= min_reps:
            return reps / elapsed
