# The two commands of the README: `make run` and `make test`. Each sets up what it needs first.
.PHONY: setup setup-test run chat test lint bench mutants

setup:
	@bash scripts/setup.sh

setup-test:
	@bash scripts/setup.sh --test

run: setup
	bash scripts/run.sh

chat: setup
	.venv/bin/mio-agent chat --mode std

test: setup-test
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	bash scripts/typecheck.sh
	.venv/bin/python -m pytest -q

bench: setup-test
	.venv/bin/mio-agent bench engine
	.venv/bin/mio-agent bench codecs
	.venv/bin/mio-agent bench voice

# mutation testing of the core modules (slow; not part of `make test`): docs/testing.md
mutants: setup-test
	bash scripts/mutants.sh
