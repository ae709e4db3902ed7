#!/usr/bin/env bash
# GPU check for a lent accelerator: one call of at most 8 minutes, nothing fetched from the network.
#
# Here (reaches PyPI), once:      benchmarks/gpu_wheels.sh     -> .whl/ (git-ignored, about 16 MB)
# There, with `.whl` carried:     bash benchmarks/gpu_check.sh $OUT [--sections a,b] [--cpu]
#
# The lent machine's python3 holds torch, torchvision, numpy, pillow and the like but not omegaconf,
# pypng or papermill's kernel; they are installed from .whl/ into a folder of their own, so the
# image's packages stay as they are. Then benchmarks/gpu_check.py runs its sections (training step
# at the paper's sizes in TF32 / bf16 / bf16 + channels_last, evaluation with flip, the IW loss
# against the authors', a short paper-profile adaptation and notebook 04 on fabricated files, a
# one-process NCCL DDP step) and rewrites $OUT/gpu_check.json after each one, so a run stopped at
# its limit still returns what it measured. Exit status: 0 when every section passed.
# `--cpu` is the rehearsal at toy sizes that tests/test_gpu_check.py runs on any machine.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-runs/gpu_check}"
shift || true
mkdir -p "$out"
export OMP_WAIT_POLICY=PASSIVE PYTHONUNBUFFERED=1 MPLBACKEND=Agg
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
# $PYTHON if set (the tests), else the project's .venv, else the image's python3 (which holds torch)
py="${PYTHON:-python3}"
[ -z "${PYTHON:-}" ] && [ -x .venv/bin/python ] && py=.venv/bin/python
# only where they are missing: the wheels are built for the lent machine's Python 3.12
if ! "$py" -c 'import omegaconf, png, papermill, ipykernel' 2>/dev/null && ls .whl/*.whl >/dev/null 2>&1; then
  site="${TMPDIR:-/tmp}/maxsq-gpu-site"
  "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" .whl/*.whl
  # before the image's own site-packages: these are the versions the tests ran with
  export PYTHONPATH="$PYTHONPATH:$site"
  export PATH="$site/bin:$PATH"
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
"$py" -c 'import sys, torch; print("python", sys.version.split()[0], "| torch", torch.__version__, "| cuda", torch.version.cuda)'
timeout 480 "$py" benchmarks/gpu_check.py "$out" "$@"
