#!/usr/bin/env bash
# On a lent GPU machine (the device tool), from the repo root, with .whl carried (benchmarks/gpu_wheels.sh):
#   benchmarks/gpu_costly.sh SECONDS [PAPER_TABLE_OPTION...] JOB...
#   JOB = MODEL/LAYER/METHOD[,METHOD...], run in the order given; options such as --later max-sensitivity
#   go to every paper_table.py call, e.g.
#   benchmarks/gpu_costly.sh 540 --later max-sensitivity lite0/block/is-cam,ss-cam lite1/block/is-cam
#   (--only max-sensitivity --batch-size 1: the Max-Sensitivity of cells whose other runs the CPU made, a
#   photo at a time; two calls in one command: move $OUT/paper-table.tgz aside between them)
# 1. installs the wheels into /tmp/site (liftcam itself runs from src/);
# 2. runs the CUDA tests (CPU against CUDA; TESTS="" skips them, TESTS=tests runs the suite);
# 3. runs benchmarks/paper_table.py --device cuda for each JOB, the tests and all of them within SECONDS (an evaluate run is
#    kept whole or not at all, a fidelity run per photo: a run stopped there resumes in the next call);
# 4. packs the jobs' layer folders (MODEL/LAYER) into $OUT/paper-table.tgz. Here: tar xzf
#    FILES_AT/paper-table.tgz (before the next call: its working tree replaces the machine's results), then
#    .venv/bin/python benchmarks/paper_table.py --assemble-only --publish.
# A dry run here on CPU: PYTHON=.venv/bin/python DEVICE=cpu RESULTS=/tmp/pt OUT=/tmp/out TESTS= \
#   benchmarks/gpu_costly.sh 60 lite0/block/random-cam
set -uo pipefail
python=${PYTHON:-python3} device=${DEVICE:-cuda} results=${RESULTS:-benchmarks/results/paper-table}
budget=${1:?seconds for the tests and the runs}
start=$SECONDS
shift
options=()
while [ $# -gt 0 ] && [[ $1 == --* || ${#options[@]} -gt 0 && $1 != */* ]]; do options+=("$1"); shift; done
$python -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  || exit 1
export PYTHONPATH="$PWD/src:/tmp/site" PYTHONUNBUFFERED=1
out=${OUT:-/tmp/out}
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
tests=${TESTS-tests/test_devices.py}
if [ -n "$tests" ]; then
  $python -m pytest -q -p no:cacheprovider $tests 2>&1 | tee "$out/tests.log" | tail -15
fi
# the table's runs are over the 8 bundled photos: a package that lacks one would change every mean
$python -c "from liftcam.data import sample_photos as s; n = len(s()); print(n, 'sample photos'); exit(n != 8)" || exit 1
for job in "$@"; do
  IFS=/ read -r model layer methods <<<"$job"
  left=$((budget - (SECONDS - start)))
  if [ "$left" -le 0 ]; then echo "gpu_costly: no time left for $job"; continue; fi
  echo "gpu_costly: $job ($left s left)"
  job_start=$SECONDS
  timeout --signal=INT "$left" $python benchmarks/paper_table.py --device "$device" --threads 8 --out "$results" \
    --models "$model" --layers "$layer" --methods ${methods//,/ } "${options[@]}" 2>&1 | tee -a "$out/paper-table.log" | tail -4
  echo "gpu_costly: $job took $((SECONDS - job_start)) s"
done
echo "gpu_costly: $((SECONDS - start)) s in all"
layers=()
for job in "$@"; do
  IFS=/ read -r model layer _ <<<"$job"
  [ -d "$results/$model/$layer" ] && layers+=("$results/$model/$layer")
done
[ ${#layers[@]} -eq 0 ] || tar czf "$out/paper-table.tgz" $(printf '%s\n' "${layers[@]}" | sort -u)
