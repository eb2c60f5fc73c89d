# mixlora: `make demo` and `make test` are the quick start; `make setup` installs and builds.
# The project's virtual environment (PyTorch 2.x, transformers, peft): the default libtorch of the addon,
# the independent references of the tests and the baselines of the benchmarks.
PYTHON ?= $(if $(wildcard .venv/bin/python),$(CURDIR)/.venv/bin/python,python3)
export PYTHON
# The addon built against Debian's libtorch 1.13 (the fallback backend), beside the default one.
SYSTEM_ADDON := build/native-system/build/Release/mixlora.node

.PHONY: setup system-deps venv native build test test-studio test-system-libtorch check-cuda-build lint lint-native format \
	test-package docs demo bench bench-isa bundle-offline test-bundle gpu-check-cpu clean

setup: system-deps venv node_modules/.package-lock.json native build

system-deps:
	@bash scripts/install-system-deps.sh

venv:
	@bash scripts/setup-venv.sh

# npm ci only when the lockfile changed since the last install (it also builds the addon).
node_modules/.package-lock.json: package.json package-lock.json
	npm ci --no-audit --no-fund
	@touch $@

native:
	@node scripts/build-native.mjs

build:
	@npx tsc -p tsconfig.json
	@npx tsc -p tsconfig.web.json

# Reference values from the independent PyTorch implementation (test/reference/*.py).
build/reference/.stamp: $(wildcard test/reference/*.py)
	@$(PYTHON) test/reference/generate.py build/reference
	@touch $@

test: setup build/reference/.stamp
	@node scripts/run-tests.mjs

# `mixlora studio` in a real headless Chromium (Debian's chromium, installed by `make setup`): train, stop,
# resume, evaluate, chat and export from the page; screenshots in build/studio-test/. A few minutes.
test-studio: node_modules/.package-lock.json native build
	@MIXLORA_NUM_THREADS=1 node --test --test-concurrency=1 dist/test/studio/studio.browser.js

# The package as users install it: packed, installed with examples/app into an empty folder outside the
# checkout, `npx mixlora info` checked, the example compiled and run (scripts/test-package.sh). The addon
# comes from the per-user build cache that `make setup`'s build filled (no second compile).
test-package: node_modules/.package-lock.json native
	@bash scripts/test-package.sh

# The API reference (typedoc, typedoc.json): HTML from the TSDoc of src/index.ts's exports, in docs/api (not
# committed: it is generated from the sources, which hold the same text).
docs: node_modules/.package-lock.json
	@npx typedoc --logLevel Warn
	@echo "API reference: docs/api/index.html" >&2

# The same suite on Debian's libtorch 1.13 (MIXLORA_BACKEND=system), built into its own folder, less the files
# whose subject sits above the tensor backend: the CLI's flags and messages, the safety and workflow cases, the
# application API, the package build, the bench reports, Python's lm-evaluation-harness against the server,
# the grammar engine, processes and signals (the server's shutdown, a rank or launcher killed, the launcher's
# usage), the server's defences against hostile clients. They ran on the default backend already. Also left
# out: the mixed-precision training run (bfloat16 emulated on CPUs without it; test/tensor/linear.test.ts
# checks the bfloat16 products on 1.13). Leaving them out keeps CI under 30 minutes.
SYSTEM_SKIP_ABOVE := /cli/,/safety/,/workflow/,/api/,/install/,/bench/,lm-eval,structured,train/mixed-precision
SYSTEM_SKIP_PROCESSES := /serve/cli.,/serve/hardening.,/distributed/failures.,/distributed/lifeline.,/distributed/launch.
test-system-libtorch: setup build/reference/.stamp
	@MIXLORA_BACKEND=system node scripts/build-native.mjs --out build/native-system
	@MIXLORA_ADDON=$(CURDIR)/$(SYSTEM_ADDON) node scripts/run-tests.mjs --skip=$(SYSTEM_SKIP_ABOVE),$(SYSTEM_SKIP_PROCESSES)

# The CUDA flavour compiles and links (no GPU needed): the addon against PyTorch's CUDA wheel, in .venv-cuda.
check-cuda-build: node_modules/.package-lock.json
	@bash scripts/check-cuda-build.sh

# Format check (prettier, 120 columns) and type check without emitting.
lint: node_modules/.package-lock.json lint-native
	@npx prettier --check --log-level warn "src/**/*.ts" "src/studio/public/*" "test/**/*.ts" "bench/**/*.ts" "examples/**/*.ts" "scripts/**/*.mjs" eslint.config.mjs
	@npx tsc -p tsconfig.json --noEmit
	@npx tsc -p tsconfig.web.json --noEmit
	@npx eslint

# The addon's own code compiled with -Wall -Wextra -Werror (libtorch's headers are system headers), into a
# folder of its own: the working addon in native/build stays (copied from the build cache when `make setup`
# already built these sources with warnings as errors, as CI does).
lint-native: node_modules/.package-lock.json
	@node scripts/build-native.mjs --werror --out build/native-werror

format: node_modules/.package-lock.json
	@npx prettier --write --log-level warn "src/**/*.ts" "src/studio/public/*" "test/**/*.ts" "bench/**/*.ts" "examples/**/*.ts" "scripts/**/*.mjs" eslint.config.mjs

demo: setup
	@bash scripts/demo.sh

bench: setup
	@bash bench/run.sh

# The training, decode and serving benchmarks under each vector-instruction level the CPU supports, the lower
# ones capped (bench/isa.ts); writes BENCHMARKS.md's "Per ISA level". About 5 minutes a level on 2 cores.
bench-isa: setup
	@node --single-threaded-gc dist/bench/isa.js --write

# The offline bundle for a GPU machine (scripts/gpu-check.sh there): dist, production node_modules, the addon's
# sources, assets and a Node 20 binary, in one tarball of at most 60 MiB.
BUNDLE := build/mixlora-offline.tar.gz
bundle-offline: build/reference/.stamp
	@npx tsc -p tsconfig.json
	@bash scripts/bundle-offline.sh $(BUNDLE)

# The bundle unpacked into an empty folder and built with its own Node only, against this machine's PyTorch
# (the .venv's); it must generate the stories260K golden text.
test-bundle: bundle-offline
	@bash scripts/test-bundle.sh $(BUNDLE)

# The same, then the GPU check's CPU mode (toy sizes) from inside the unpacked bundle.
gpu-check-cpu: bundle-offline
	@rm -rf build/gpu-check-cpu
	@bash scripts/test-bundle.sh $(BUNDLE) --gpu-check-cpu build/gpu-check-cpu

clean:
	rm -rf dist native/build build
