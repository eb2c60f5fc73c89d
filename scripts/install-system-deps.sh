#!/usr/bin/env bash
# Installs what a fresh Debian/Ubuntu machine lacks for mixlora (idempotent; apt only when missing):
#   libtorch-dev        Debian's libtorch 1.13: the fallback backend (MIXLORA_BACKEND=system, or when pip
#                       cannot install PyTorch 2.x), built and tested by `make test-system-libtorch`
#   libopenblas0-openmp an optimised BLAS for that libtorch (Debian otherwise links the reference BLAS,
#                       about 50x slower at matrix products)
#   python3-venv        `python3 -m venv` for the project's .venv (PyTorch 2.x, transformers, peft)
#   fonts-dejavu-core   a font for the text in PNG charts
#   chromium            the headless browser of the studio's browser tests (make test-studio), driven by
#                       playwright-core (which downloads no browser of its own)
# MIXLORA_SYSTEM_LIBTORCH=0 skips the two libtorch packages (a machine that only uses PyTorch 2.x);
# MIXLORA_BROWSER=0 skips chromium (a machine that does not run the studio's browser tests).
set -euo pipefail
need=()
if [ "${MIXLORA_SYSTEM_LIBTORCH:-1}" != "0" ]; then
  MIXLORA_BACKEND=system node scripts/libtorch.mjs summary >/dev/null 2>&1 || need+=(libtorch-dev)
  if command -v dpkg >/dev/null; then
    dpkg -s libopenblas0-openmp >/dev/null 2>&1 || dpkg -s libopenblas0-pthread >/dev/null 2>&1 ||
      need+=(libopenblas0-openmp)
  fi
fi
python="${MIXLORA_VENV_PYTHON:-python3}"
"$python" -c 'import ensurepip, venv' >/dev/null 2>&1 || need+=(python3-venv)
[ -d /usr/share/fonts/truetype/dejavu ] || need+=(fonts-dejavu-core)
if [ "${MIXLORA_BROWSER:-1}" != "0" ]; then
  command -v chromium >/dev/null || need+=(chromium)
fi
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "mixlora setup: installing ${need[*]} with apt-get" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
else
  echo "mixlora setup: missing ${need[*]}; install them (as root: apt-get install ${need[*]})." >&2
  echo "The addon builds against the .venv's PyTorch 2.x without them, or against LIBTORCH=... (see docs/building.md)." >&2
fi
