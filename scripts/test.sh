#!/usr/bin/env bash
# Install everything the tests need, then lint, type-check and run the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh test
.venv/bin/ruff check src tests benchmarks
.venv/bin/ruff format --check src tests benchmarks
.venv/bin/mypy
# the documentation site, warnings as errors (mkdocs.yml: strict); the browser test opens its front page
NO_MKDOCS_2_WARNING=1 .venv/bin/mkdocs build --strict --quiet
# CI runs the browser test: a missing chromium fails it instead of skipping it
LIFTCAM_REQUIRE_BROWSER=1 .venv/bin/python -m pytest -q "$@"
