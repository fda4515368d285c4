# The two commands a user needs: `make demo` and `make test`. Each runs its own setup (idempotent).
SHELL := /bin/bash
STATE ?= $(CURDIR)/.state
export LATTICE_STATE_DIR ?= $(STATE)

.PHONY: setup build demo demo-rootfs test test-unit test-e2e lint typecheck bench clean

setup:
	@bash scripts/setup.sh

build:
	@npm run --silent build

demo-rootfs: setup
	@bash bundles/demo/build-rootfs.sh $(STATE)/demo-rootfs >/dev/null

demo: demo-rootfs
	@bash scripts/demo.sh

typecheck:
	@npm run --silent typecheck

lint:
	@npx eslint src test e2e bench

test: setup typecheck lint
	@bash scripts/test.sh

test-unit: setup
	@npx vitest run --project unit

test-e2e: setup
	@npx vitest run --project e2e

bench: setup
	@for b in bench/*.ts; do echo "== $$b"; npx tsx $$b || exit 1; done

clean:
	rm -rf dist .state
