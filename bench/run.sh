#!/usr/bin/env bash
# Runs every benchmark beside its PyTorch eager baseline and writes BENCHMARKS.md (see bench/run.ts).
# BENCH_ROUNDS (default 3) repeats the training-step runs; BENCH_STEPS (default 5) timed steps per run.
set -euo pipefail
cd "$(dirname "$0")/.."
# The flags bin/mixlora runs with (src/util/node-flags.ts): the in-process benchmarks run as mixlora does.
node --single-threaded-gc dist/bench/run.js
