#!/usr/bin/env bash
# The GPU check (issue 17): on a Linux machine with an NVIDIA GPU, a C++ compiler and a python3 whose torch
# is 2.x with CUDA, with no network and no Node of its own (the offline bundle brings one: node/bin/node):
#   tar xzf mixlora-offline.tar.gz && cd mixlora && scripts/gpu-check.sh OUTDIR [--device cuda|cuda:N|cpu]
# 1. builds the addon against that python's torch (LIBTORCH_USE_PYTORCH=1; PYTHON picks the interpreter),
# 2. then, within 8 minutes (bench/gpu-check.ts): the parity tests on the device in float32 (TF32 off) and
#    bfloat16, the demo training run with `device: cuda` killed after its first checkpoint and resumed
#    (compared with an uninterrupted run), generate and eval on the device, and the training-step benchmark
#    on LLaMA-2-7B shapes beside PyTorch eager. Results: OUTDIR/results.json, results.md, benchmarks-gpu.md,
#    logs/; a summary on stdout. Exit 0 when every step passed.
# --device cpu runs the same steps at toy sizes (`make gpu-check-cpu` does, from the unpacked bundle).
# --build-only stops after the build (to split the build and the check over two sessions on a rented GPU).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUTDIR=${1:?usage: scripts/gpu-check.sh OUTDIR [--device cuda|cuda:N|cpu] [--build-only]}
shift
DEVICE=cuda
BUILD_ONLY=0
while [ $# -gt 0 ]; do
  case "$1" in
    --build-only) BUILD_ONLY=1; shift ;;
    --device) DEVICE=${2:?--device needs a value}; shift 2 ;;
    --device=*) DEVICE=${1#--device=}; shift ;;
    *) echo "gpu-check: unknown argument $1" >&2; exit 2 ;;
  esac
done
case "$DEVICE" in cpu | cuda | cuda:[0-9]*) ;; *) echo "gpu-check: --device $DEVICE: expected cuda, cuda:N or cpu" >&2; exit 2 ;; esac

# The bundle's Node first (binding.gyp runs `node` too), else one on PATH.
if [ -x "$ROOT/node/bin/node" ]; then export PATH="$ROOT/node/bin:$PATH"; fi
command -v node >/dev/null || { echo "gpu-check: no node (unpack the offline bundle: make bundle-offline)" >&2; exit 1; }
export PYTHON=${PYTHON:-python3}
command -v "$PYTHON" >/dev/null || { echo "gpu-check: $PYTHON not found (set PYTHON to a python with torch 2.x)" >&2; exit 1; }
if [ "$DEVICE" != cpu ]; then
  "$PYTHON" -c 'import sys, torch; v = torch.__version__; sys.exit(0 if v.startswith("2.") and torch.version.cuda else f"gpu-check: {sys.executable} has torch {v} (CUDA {torch.version.cuda}); a CUDA build of torch 2.x is needed")'
fi

T0=$(date +%s)
echo "gpu-check: building the addon against $("$PYTHON" -c 'import torch; print("torch", torch.__version__, "from", torch.__file__)')" >&2
LIBTORCH_USE_PYTORCH=1 node scripts/build-native.mjs >&2
echo "gpu-check: addon built in $(($(date +%s) - T0)) s" >&2
[ "$BUILD_ONLY" = 1 ] && exit 0
unset MIXLORA_ADDON
exec node dist/bench/gpu-check.js "$OUTDIR" --device "$DEVICE"
