# The two set-up commands of the README: each installs what it needs first.
.PHONY: setup demo test bench

setup:
	bash scripts/bootstrap.sh

demo: setup
	.venv/bin/python -m facegeom demo

test: setup
	.venv/bin/python -m pytest -q tests

bench: setup
	.venv/bin/python -m facegeom bench
