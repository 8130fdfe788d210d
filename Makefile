# The two commands a new user needs (each installs what it needs first):
#   make run    the gateway on its embedded default (memory store, bundled mock worker, demo key)
#   make test   linters, type check and the whole test suite
.PHONY: run test bench check fmt

run:
	scripts/run

test:
	scripts/test

bench:
	bench/run

check:
	scripts/bootstrap && .venv/bin/gateway check --config config/gateway.yaml

fmt:
	scripts/bootstrap dev && .venv/bin/ruff format gateway tests bench && .venv/bin/ruff check --fix gateway tests bench
