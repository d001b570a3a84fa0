# The two commands of the README: `make run` and `make test`. Each sets up what it needs first.
.PHONY: setup run chat test lint bench

setup:
	@bash scripts/setup.sh

run: setup
	bash scripts/run.sh

chat: setup
	.venv/bin/mio-agent chat

test: setup
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	bash scripts/typecheck.sh
	.venv/bin/python -m pytest -q

bench: setup
	.venv/bin/mio-agent bench engine
	.venv/bin/mio-agent bench codecs
	.venv/bin/mio-agent bench voice

