# The two set-up commands of the README: each installs what it needs first.
.PHONY: setup demo test bench docs check-sdist

setup:
	bash scripts/bootstrap.sh

demo: setup
	.venv/bin/python -m facegeom demo

test: setup
	.venv/bin/python -m pytest -q tests

bench: setup
	.venv/bin/python -m facegeom bench

# The documentation site (mkdocs --strict) into site/, with its own pinned tools in .venv-docs.
docs:
	bash scripts/build-docs.sh

# Build the sdist, install it into a fresh venv with torch, check the compiled kernels load.
check-sdist: setup
	bash scripts/check-sdist.sh
