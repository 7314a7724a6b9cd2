#!/usr/bin/env bash
# CI step (not pytest): the documentation site builds with warnings as errors
# (mkdocs --strict: a broken link, nav entry or API reference fails).
# The tools are pinned in docs/requirements.txt and live in their own venv
# (DOCS_VENV, default .venv-docs), apart from the project's.
set -euo pipefail
cd "$(dirname "$0")/.."
docs_venv=${DOCS_VENV:-.venv-docs}
python=${PYTHON:-python3}
stamp="$docs_venv/.requirements-$(cksum < docs/requirements.txt | cut -d' ' -f1)"
if [ ! -f "$stamp" ]; then
  "$python" -m venv "$docs_venv"
  "$docs_venv/bin/python" -m pip install -q -r docs/requirements.txt
  touch "$stamp"
fi
"$docs_venv/bin/mkdocs" build --strict --clean --site-dir "${SITE_DIR:-site}"
echo "build-docs: ok (${SITE_DIR:-site}/index.html)"
