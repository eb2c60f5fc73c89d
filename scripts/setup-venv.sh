#!/usr/bin/env bash
# Makes the project-local virtual environment .venv with PyTorch 2.x (the addon's default libtorch) and the
# Python libraries the tests and benchmarks compare against (transformers, peft). Idempotent: installs only
# what is missing or pinned differently.
#   scripts/setup-venv.sh                    .venv of the checkout, torch and the libraries of the tests
#   scripts/setup-venv.sh --torch-only DIR   a virtual environment at DIR with the pinned torch alone: the
#                                            private one an installed package builds against when the user
#                                            has no PyTorch 2.x (scripts/build-native.mjs; in the user cache)
#   scripts/setup-venv.sh --print-torch      the pip arguments of the pinned torch for this machine
#   CPU build of torch on a machine without an NVIDIA GPU, the CUDA build where one is present
#   (override: MIXLORA_TORCH=cpu|cuda). Tested range: torch 2.13 (CPU) to 2.14 (CUDA).
#   PIP_RETRIES: pip's retries per package (default 0 here: an unreachable index fails at once rather
#   than after minutes of retries; raise it on a flaky network).
# When pip cannot install torch, says so and exits 0: the build then falls back to the system libtorch
# (Debian's libtorch-dev), exactly as MIXLORA_BACKEND=system chooses it.
set -euo pipefail
VENV=.venv
TORCH_ONLY=0
PRINT_TORCH=0
case "${1:-}" in
  --torch-only) TORCH_ONLY=1; VENV=$(realpath -m "${2:?--torch-only needs a folder}") ;;
  --print-torch) PRINT_TORCH=1 ;;
  "") ;;
  *) echo "usage: scripts/setup-venv.sh [--torch-only DIR | --print-torch]" >&2; exit 2 ;;
esac
cd "$(dirname "$0")/.."

TORCH_CPU="torch==2.13.0+cpu"
TORCH_CUDA="torch==2.14.1"
# The references of the test suite and the baselines of the benchmarks: transformers and peft (models,
# LoRA/DoRA), tensorboard (its own reader checks our event files), and lm-evaluation-harness's
# log-likelihood scoring. lm_eval is installed without its declared dependencies, some of which
# (evaluate, rouge-score, sqlitedict...) serve only task downloads and metrics we do not use; what its
# Hugging Face model class imports is listed here, and what its API models (local-completions) need.
PY_LIBS=(numpy==2.4.6 safetensors==0.8.0 transformers==5.18.0 peft==0.21.0 tensorboard==2.21.0
  accelerate==1.15.0 datasets==5.0.1 dill==0.4.1 more-itertools==11.1.0 sacrebleu==2.6.0 scikit-learn==1.9.1
  jinja2==3.1.6 tqdm==4.70.1 requests==2.34.2 aiohttp==3.14.3 tenacity==9.1.4)
PY_NODEPS=(lm_eval==0.4.13)
# Where PyTorch publishes its CPU-only wheels (PyPI has only the CUDA ones).
TORCH_CPU_INDEX="${MIXLORA_TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}"
export PIP_RETRIES="${PIP_RETRIES:-0}" PIP_DISABLE_PIP_VERSION_CHECK=1

flavour="${MIXLORA_TORCH:-}"
if [ -z "$flavour" ]; then
  if ls /proc/driver/nvidia/gpus/* >/dev/null 2>&1 || nvidia-smi -L >/dev/null 2>&1; then flavour=cuda; else flavour=cpu; fi
fi
case "$flavour" in
  cpu) torch_spec="$TORCH_CPU"; index_args=(--extra-index-url "$TORCH_CPU_INDEX") ;;
  cuda) torch_spec="$TORCH_CUDA"; index_args=() ;;
  *) echo "mixlora setup: MIXLORA_TORCH=$flavour: expected cpu or cuda" >&2; exit 2 ;;
esac

if [ "$PRINT_TORCH" = 1 ]; then echo "$torch_spec ${index_args[*]}"; exit 0; fi
if [ "$TORCH_ONLY" = 1 ]; then PY_LIBS=(); PY_NODEPS=(); fi

python="${MIXLORA_VENV_PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
  echo "mixlora setup: creating $VENV with $($python --version 2>&1)" >&2
  mkdir -p "$(dirname "$VENV")"
  if ! "$python" -m venv "$VENV"; then
    rm -rf "$VENV"
    echo "mixlora setup: '$python -m venv' failed (Debian/Ubuntu: apt-get install python3-venv)$([ "$TORCH_ONLY" = 1 ] || echo '; using the system libtorch')" >&2
    exit 0
  fi
fi

want="${torch_spec#torch==}"
have="$("$VENV/bin/python" -c 'import torch; print(torch.__version__)' 2>/dev/null || true)"
missing=()
[ "$have" = "$want" ] || missing+=("$torch_spec")
version_of() { "$VENV/bin/python" -c "import importlib.metadata as m; print(m.version('$1'))" 2>/dev/null || true; }
for lib in "${PY_LIBS[@]}"; do
  [ "$(version_of "${lib%%==*}")" = "${lib#*==}" ] || missing+=("$lib")
done
missing_nodeps=()
for lib in "${PY_NODEPS[@]}"; do
  [ "$(version_of "${lib%%==*}")" = "${lib#*==}" ] || missing_nodeps+=("$lib")
done
[ ${#missing[@]} -eq 0 ] && [ ${#missing_nodeps[@]} -eq 0 ] && exit 0

echo "mixlora setup: pip installing ${missing[*]} ${missing_nodeps[*]} into $VENV" >&2
status=0
if [ ${#missing[@]} -gt 0 ]; then
  "$VENV/bin/python" -m pip install -q "${index_args[@]}" "${missing[@]}" || status=$?
fi
if [ ${#missing_nodeps[@]} -gt 0 ] && [ "$status" -eq 0 ]; then
  "$VENV/bin/python" -m pip install -q --no-deps "${missing_nodeps[@]}" || status=$?
fi
if ! "$VENV/bin/python" -c "import torch" >/dev/null 2>&1; then
  if [ "$TORCH_ONLY" = 1 ]; then echo "mixlora setup: pip could not install $torch_spec into $VENV" >&2
  else echo "mixlora setup: pip could not install $torch_spec; the addon falls back to the system libtorch" >&2; fi
  exit 0
fi
if [ "$status" -ne 0 ]; then
  echo "mixlora setup: pip could not install all of ${missing[*]} ${missing_nodeps[*]} (exit $status); see above" >&2
  exit 1
fi
