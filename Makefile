# mixlora: `make demo` and `make test` are the quick start; `make setup` installs and builds.
PYTHON ?= /usr/bin/python3
export PYTHON

.PHONY: setup system-deps native build test lint format demo bench clean

setup: system-deps node_modules/.package-lock.json native build

system-deps:
	@bash scripts/install-system-deps.sh

# npm ci only when the lockfile changed since the last install (it also builds the addon).
node_modules/.package-lock.json: package.json package-lock.json
	npm ci --no-audit --no-fund
	@touch $@

native:
	@node scripts/build-native.mjs

build:
	@npx tsc -p tsconfig.json

# Reference values from the independent PyTorch implementation (test/reference/*.py).
build/reference/.stamp: $(wildcard test/reference/*.py)
	@$(PYTHON) test/reference/generate.py build/reference
	@touch $@

test: setup build/reference/.stamp
	@node scripts/run-tests.mjs

# Format check (prettier, 120 columns) and type check without emitting.
lint: node_modules/.package-lock.json
	@npx prettier --check --log-level warn "src/**/*.ts" "test/**/*.ts" "bench/**/*.ts" "scripts/**/*.mjs"
	@npx tsc -p tsconfig.json --noEmit

format: node_modules/.package-lock.json
	@npx prettier --write --log-level warn "src/**/*.ts" "test/**/*.ts" "bench/**/*.ts" "scripts/**/*.mjs"

demo: setup
	@bash scripts/demo.sh

bench: setup
	@bash bench/run.sh

clean:
	rm -rf dist native/build build
