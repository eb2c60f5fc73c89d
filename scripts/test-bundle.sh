#!/usr/bin/env bash
# `make test-bundle`: the offline bundle works on its own. Unpacks it into an empty temp folder, builds the
# addon there with the bundled Node as the only Node on PATH (and an empty HOME: no cached node-gyp headers)
# against this machine's PyTorch (LIBTORCH_USE_PYTORCH=1, $PYTHON), without network where unshare(1) can
# cut it, and generates the stories260K golden text (test/models/golden.test.ts). With --gpu-check-cpu OUTDIR it then runs the bundle's
# scripts/gpu-check.sh OUTDIR --device cpu in the same folder (`make gpu-check-cpu`).
#   PYTHON=/abs/python scripts/test-bundle.sh BUNDLE.tar.gz [--gpu-check-cpu OUTDIR]
set -euo pipefail
BUNDLE=$(realpath "${1:?usage: scripts/test-bundle.sh BUNDLE.tar.gz [--gpu-check-cpu OUTDIR]}")
CHECK_OUT=
if [ "${2:-}" = --gpu-check-cpu ]; then CHECK_OUT=$(realpath -m "${3:?--gpu-check-cpu needs OUTDIR}"); fi
PY=${PYTHON:-python3}
PY=$(command -v "$PY")
GOLDEN=', there was a little girl named Lily. She loved to play outside in the park.'
T0=$(date +%s)

TMP=$(mktemp -d /tmp/mixlora-bundle-test.XXXXXX)
trap 'rm -rf "$TMP"' EXIT
tar -C "$TMP" -xzf "$BUNDLE"
ROOT=$TMP/mixlora

# No network: the build and the checks run in a network namespace of their own (no interface but the
# loopback, brought up for the process group's rendezvous on 127.0.0.1, as on any machine) where unshare(1)
# may make one; elsewhere they run as they are, and say so.
offline() {
  local up='ip link set lo up 2>/dev/null || true; exec "$@"'
  if unshare -n true 2>/dev/null; then unshare -n sh -c "$up" sh "$@"
  elif unshare -rn true 2>/dev/null; then unshare -rn sh -c "$up" sh "$@"
  else "$@"; fi
}
if unshare -n true 2>/dev/null || unshare -rn true 2>/dev/null; then NET="without network (unshare -n)"
else NET="WITH network (unshare -n is not permitted here)"; fi

# A PATH whose only node is the bundle's: every other tool of this machine through links, minus Node's.
TOOLS=$TMP/tools
mkdir -p "$TOOLS" "$TMP/home"
IFS=: read -r -a DIRS <<<"$PATH"
for d in "${DIRS[@]}"; do
  [ -d "$d" ] || continue
  for f in "$d"/*; do
    n=${f##*/}
    case "$n" in node | nodejs | npm | npx | corepack) continue ;; esac
    [ -x "$f" ] && [ ! -e "$TOOLS/$n" ] && ln -s "$f" "$TOOLS/$n"
  done
done
export PATH="$ROOT/node/bin:$TOOLS"
export HOME=$TMP/home
unset npm_config_nodedir MIXLORA_ADDON LIBTORCH MIXLORA_BACKEND
[ "$(type -a -p node)" = "$ROOT/node/bin/node" ] || { echo "test-bundle: more than one node on PATH" >&2; exit 1; }
echo "test-bundle: unpacked into $ROOT; node $(node --version) at $(command -v node); building and checking $NET" >&2

cd "$ROOT"
LIBTORCH_USE_PYTORCH=1 PYTHON="$PY" offline node scripts/build-native.mjs
echo "test-bundle: addon built ($(($(date +%s) - T0)) s)" >&2
OUT=$(offline bin/mixlora generate --model assets/models/stories260K/stories260K.bin \
  --tokenizer assets/models/stories260K/tok512.bin --prompt 'Once upon a time' --max-new-tokens 32 --temperature 0)
echo "$OUT"
case "$OUT" in
  *"$GOLDEN"*) echo "test-bundle: golden text OK ($(($(date +%s) - T0)) s)" >&2 ;;
  *) echo "test-bundle: the bundle's generate did not give the golden text:$GOLDEN" >&2; exit 1 ;;
esac
if [ -n "$CHECK_OUT" ]; then
  PYTHON="$PY" offline scripts/gpu-check.sh "$CHECK_OUT" --device cpu
fi
echo "test-bundle: passed in $(($(date +%s) - T0)) s" >&2
