#!/usr/bin/env bash
# GPU check for a lent accelerator: ≤ 8 minutes, installs nothing from the network.
#   benchmarks/gpu_check.sh OUT_DIR
# Prints a short table and writes OUT_DIR/gpu_check.json (see benchmarks/gpu_check.py).
# Uses ./.venv/bin/python when present, else python3 (the device image's python holds PyTorch);
# the project's pure-Python dependencies it lacks (cityscapesscripts, and its appdirs /
# pyquaternion / coloredlogs) must travel as wheels in .whl/ (see the device tool's README).
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-runs/gpu_check}"
mkdir -p "$out"
export OMP_WAIT_POLICY=PASSIVE PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
py=python3
[ -x .venv/bin/python ] && py=.venv/bin/python
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
timeout 480 "$py" benchmarks/gpu_check.py "$out"
