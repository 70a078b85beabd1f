#!/usr/bin/env bash
# Every GPU check of the project in one bounded run, for a lent CUDA machine (issue 13):
#   bash benchmarks/gpu_check.sh            # writes into $OUT (or ./gpu_check)
# Steps, each under its own time limit so that a hang cannot eat the next one:
#   1. the CUDA tests (pytest -m cuda) and the solver, labeler and trainer test files with CUDA
#      available;
#   2. benchmarks/gpu_bench.py: the solver at 1M x 3000 and up, POT's torch back-end, the
#      memory-bounded path;
#   3. benchmarks/gpu_train.py: the paper preset's training steps with mixed precision;
#   4. benchmarks/bench_codes.py --device cuda: online codes against SwAV's 3 iterations.
# and, between 1 and 2, benchmarks/gpu_pass.py: one pass taken apart (torch ops, the Triton
# kernel's tiles). GPU_CHECK_CORE=0, GPU_CHECK_PASS=0, GPU_CHECK_TRAIN=0, GPU_CHECK_CODES=0 and GPU_TRAIN_BATCHES=64
# shorten a rerun.
# Packages the device image lacks (PyAV, POT) are expected as wheels in .whl/ or unpacked
# in .site/ (see docs/benchmarks/gpu.md); a step whose package is missing reports it and the
# others still run.
set -u
OUT=${OUT:-gpu_check}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 OMP_WAIT_POLICY=PASSIVE HYPOTHESIS_PROFILE=ci
PY=${PYTHON:-python3}
log() { echo "== $(date -u +%H:%M:%S) $*"; }
{
  log "setup"
  if ls .whl/*.whl >/dev/null 2>&1; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  fi
  export PYTHONPATH="$PWD:/tmp/site:$PWD/.site/pot${PYTHONPATH:+:$PYTHONPATH}"
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
  grep -m1 "model name" /proc/cpuinfo  # the host CPU: another vendor than the development machine's?
  $PY -c "import torch, sys; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"
  $PY -c "import av, ot; print('av', av.__version__, 'pot', ot.__version__)"

  log "1a. CUDA tests (pytest -m cuda)"
  XDIST=$($PY -c "import xdist" 2>/dev/null && echo "-n 8")
  timeout 120 $PY -m pytest -q -p no:cacheprovider $XDIST -m cuda -rs \
    --junitxml="$OUT/pytest.xml" -o junit_family=xunit2 tests 2>&1 | tail -60
  echo "pytest -m cuda exit ${PIPESTATUS[0]}"

  if [ "${GPU_CHECK_CORE:-1}" = 1 ]; then
    log "1b. solver, labeler and trainer test files with CUDA available"
    timeout 80 $PY -m pytest -q -p no:cacheprovider $XDIST -m "not slow and not cuda" -rs \
      --junitxml="$OUT/pytest_core.xml" -o junit_family=xunit2 \
      tests/otcluster/test_sinkhorn.py tests/otcluster/test_solver.py tests/otcluster/test_codes.py \
      tests/otcluster/test_align.py tests/otcluster/test_otkmeans.py tests/otcluster/test_labeler.py \
      tests/otcluster/test_trainer.py tests/otcluster/test_veto.py tests/otcluster/test_relaxed.py \
      tests/otcluster/test_rounding.py 2>&1 | tail -40
    echo "pytest core exit ${PIPESTATUS[0]}"
  fi

  [ "${GPU_CHECK_PASS:-1}" = 1 ] && {
  log "1c. one pass taken apart: torch ops, the Triton kernel's tiles, online codes' launches"
  timeout 120 $PY benchmarks/gpu_pass.py --budget-s 80 --out "$OUT/gpu_pass.json" 2>&1 | tail -20
  echo "gpu_pass exit ${PIPESTATUS[0]}"
  }

  log "2. solver benchmark"
  timeout 150 $PY benchmarks/gpu_bench.py --budget-s 100 --out "$OUT/gpu_bench.json" 2>&1 | tail -30
  echo "gpu_bench exit ${PIPESTATUS[0]}"

  [ "${GPU_CHECK_TRAIN:-1}" = 1 ] || { log "done"; exit 0; }
  log "3. paper preset training steps"
  timeout 100 $PY benchmarks/gpu_train.py --budget-s 50 --batch-sizes "${GPU_TRAIN_BATCHES:-16,64}" --out "$OUT/gpu_train.json" 2>&1 | tail -20
  echo "gpu_train exit ${PIPESTATUS[0]}"

  [ "${GPU_CHECK_CODES:-1}" = 1 ] || { log "done"; exit 0; }
  log "4. online codes"
  timeout 30 $PY benchmarks/bench_codes.py --device cuda --out "$OUT/codes" 2>&1 | tail -15
  echo "bench_codes exit ${PIPESTATUS[0]}"
  log "done"
} 2>&1 | tee "$OUT/check.log"
