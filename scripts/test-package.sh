#!/usr/bin/env bash
# `make test-package`: the package as a user gets it. Packs it (npm pack), puts the tarball and examples/app
# (whose package.json depends on the tarball, file:mixlora.tgz) into an empty folder outside the repository,
# installs it there, checks that `npx mixlora info` reports PyTorch 2.x, then compiles and runs the example:
# it trains a LoRA with a progress line, streams a completion with it and prints perplexities.
# The install script finds this machine's PyTorch 2.x through $PYTHON (the Makefile exports the checkout's
# .venv python: the machine's PyTorch, as a user's own would be) and, the addon's sources, flags, compiler,
# Node and libtorch being those of `make setup`'s build, copies that build from the per-user addon cache
# (scripts/addon-cache.mjs) instead of compiling it; MIXLORA_ADDON_CACHE=0 compiles it as a first install does.
#   scripts/test-package.sh
set -euo pipefail
cd "$(dirname "$0")/.."
T0=$(date +%s)
# The machine's PyTorch: the checkout's .venv unless PYTHON names another (the Makefile exports it too).
if [ -z "${PYTHON:-}" ] && [ -x .venv/bin/python ]; then export PYTHON=$PWD/.venv/bin/python; fi
# dist/ as make build left it (CI: make test just built it), compiled again only when a source is newer.
if [ ! -f dist/src/index.js ] || [ -n "$(find src -name '*.ts' -newer dist/src/index.js | head -1)" ]; then
  npx tsc -p tsconfig.json && npx tsc -p tsconfig.web.json
fi
TMP=$(mktemp -d /tmp/mixlora-package-test.XXXXXX)
trap 'rm -rf "$TMP"' EXIT
step() { echo "test-package: $1 ($(($(date +%s) - T0)) s)" >&2; }

# (dist/ is fresh: prepack's compile is skipped)
npm pack --ignore-scripts --pack-destination "$TMP" --silent >/dev/null
TGZ=$(echo "$TMP"/mixlora-*.tgz)
step "packed $(basename "$TGZ"): $(du -k "$TGZ" | cut -f1) KiB ($(tar -tzf "$TGZ" | wc -l) files)"
for need in package/native/third_party/gloo/gloo/rendezvous/store.h package/native/binding.gyp \
  package/native/common.h package/native/bindings/addon.cc package/native/kernels/linear.cc \
  package/native/distributed/distributed.cc \
  package/scripts/build-native.mjs package/scripts/addon-cache.mjs package/scripts/setup-venv.sh \
  package/dist/src/index.d.ts package/assets/models/stories260K/stories260K.bin; do
  tar -tzf "$TGZ" "$need" >/dev/null 2>&1 || { echo "test-package: the tarball lacks $need" >&2; exit 1; }
done

APP=$TMP/app
mkdir "$APP"
cp examples/app/package.json examples/app/tsconfig.json examples/app/main.ts examples/app/stories.jsonl "$APP/"
mv "$TGZ" "$APP/mixlora.tgz"
cd "$APP"
npm install --no-audit --no-fund --prefer-offline --foreground-scripts --loglevel=warn 2>&1 |
  grep -v '^npm warn install-scripts' >&2
step "installed into $APP"

INFO=$(npx --no-install mixlora info --json)
INFO=$INFO APP=$APP node <<'EOF'
const i = JSON.parse(process.env.INFO);
const fail = (m) => { console.error(`test-package: ${m}`); process.exit(1); };
if (!/^2\./.test(i.torch) || i.backend !== 'PyTorch 2.x') fail(`backend ${i.backend}, torch ${i.torch}: expected PyTorch 2.x`);
if (!i.addon.startsWith(`${process.env.APP}/node_modules/mixlora/`)) fail(`the addon ${i.addon} is not the installed one`);
console.error(`test-package: npx mixlora info: ${i.backend} (torch ${i.torch} from ${i.source})`);
EOF

npm run --silent build
step "example compiled"
OUT=$(npm start --silent)
echo "$OUT"
for want in '^training spark: step 30/30, loss ' '^trained: ' '^completion: Once upon a time' '^perplexity: base model [0-9.]+, with the spark adapter [0-9.]+$'; do
  echo "$OUT" | grep -Eq "$want" || { echo "test-package: the example's output lacks /$want/" >&2; exit 1; }
done
step "passed"
cd /
rm -rf "$TMP"
step "removed $TMP"
