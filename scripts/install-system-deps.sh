#!/usr/bin/env bash
# Installs what a fresh Debian/Ubuntu machine lacks for mixlora (idempotent; apt only when missing):
#   libtorch-dev       the numeric core the addon links against (skipped when LIBTORCH or
#                      LIBTORCH_USE_PYTORCH=1 points at another libtorch)
#   python3-torch      the independent PyTorch reference for tests and the benchmarks' baselines
#   libopenblas0-openmp an optimised BLAS for libtorch (Debian otherwise links the slow reference BLAS)
#   fonts-dejavu-core  a font for the text in PNG charts
set -euo pipefail
need=()
if [ -z "${LIBTORCH:-}" ] && [ "${LIBTORCH_USE_PYTORCH:-}" != "1" ]; then
  node scripts/libtorch.mjs summary >/dev/null 2>&1 || need+=(libtorch-dev)
fi
/usr/bin/python3 -c 'import torch' >/dev/null 2>&1 || need+=(python3-torch)
[ -d /usr/share/fonts/truetype/dejavu ] || need+=(fonts-dejavu-core)
# Debian's libtorch links libblas.so.3; without an optimised provider that is the reference BLAS,
# about 50x slower at matrix products.
if [ -z "${LIBTORCH:-}" ] && [ "${LIBTORCH_USE_PYTORCH:-}" != "1" ] && command -v dpkg >/dev/null; then
  dpkg -s libopenblas0-openmp >/dev/null 2>&1 || dpkg -s libopenblas0-pthread >/dev/null 2>&1 || need+=(libopenblas0-openmp)
fi
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "mixlora setup: installing ${need[*]} with apt-get" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
else
  echo "mixlora setup: missing ${need[*]}; install them (as root: apt-get install ${need[*]})," >&2
  echo "or point LIBTORCH / LIBTORCH_USE_PYTORCH=1 at a libtorch (see README)." >&2
  # libtorch is required to build; the others only for the reference tests and benchmarks.
  case " ${need[*]} " in *" libtorch-dev "*) exit 1 ;; esac
fi
