#!/usr/bin/env bash
# Checks that the CUDA flavour of the addon compiles and links: PyTorch's CUDA wheel (with its nvidia-*
# libraries) in .venv-cuda, the addon built against it in build/native-cuda with warnings as errors, then
# loaded on this machine (no GPU needed: CUDA is then reported as having no device).
set -euo pipefail
cd "$(dirname "$0")/.."
TORCH_CUDA="${MIXLORA_TORCH_CUDA_SPEC:-torch==2.14.1}"
export PIP_RETRIES="${PIP_RETRIES:-0}" PIP_DISABLE_PIP_VERSION_CHECK=1
python="${MIXLORA_VENV_PYTHON:-python3}"
[ -x .venv-cuda/bin/python ] || "$python" -m venv .venv-cuda
want="${TORCH_CUDA#torch==}"
have="$(.venv-cuda/bin/python -c 'import torch; print(torch.__version__)' 2>/dev/null || true)"
if [ "$have" != "$want" ]; then
  echo "check-cuda-build: pip installing $TORCH_CUDA into .venv-cuda (about 3 GB with the CUDA libraries)" >&2
  # torch itself, then what it requires (the CUDA libraries: cuda-toolkit, nvidia-*; filelock, sympy...)
  # except cuda-bindings and triton: Python-side GPU tools that libtorch does not load, and that pip's
  # index on some machines lacks.
  .venv-cuda/bin/python -m pip install -q --no-deps "$TORCH_CUDA"
  mapfile -t torch_requires < <(.venv-cuda/bin/python -c '
import importlib.metadata as m
for r in m.requires("torch"):
    spec, _, marker = r.partition(";")
    name = spec.strip().split("[")[0].split("=")[0].split("<")[0].split(">")[0].split("~")[0].strip()
    if "extra ==" not in marker and name not in ("cuda-bindings", "triton"):
        print(spec.strip())')
  .venv-cuda/bin/python -m pip install -q "${torch_requires[@]}"
fi
LIBTORCH_USE_PYTORCH=1 PYTHON="$PWD/.venv-cuda/bin/python" node scripts/build-native.mjs --out build/native-cuda --werror
MIXLORA_ADDON="$PWD/build/native-cuda/build/Release/mixlora.node" node -e '
  import("./dist/src/tensor/backend-info.js").then(({ backendInfo }) => {
    const i = backendInfo();
    if (!i.cuda_build) { console.error("check-cuda-build: the addon was not built with CUDA"); process.exit(1); }
    console.log(`check-cuda-build: ok, libtorch ${i.torch} CUDA build, ${i.cuda_devices} CUDA device(s) here`);
  });'
