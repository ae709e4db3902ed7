#!/usr/bin/env bash
# Fetch, on this machine (which reaches PyPI), the wheels benchmarks/gpu_check.sh installs on a lent
# GPU machine that reaches nothing: its image holds Python 3.12, torch, torchvision, numpy, pillow,
# scipy, matplotlib, pandas, pyyaml, requests, aiohttp, psutil, pygments and packaging, but not the
# engine's config (omegaconf), the PNG reader (pypng) or papermill and the Jupyter kernel it drives.
#   benchmarks/gpu_wheels.sh            -> .whl/ (git-ignored), then prints its size
# Then run the check there with `.whl` carried: bash benchmarks/gpu_check.sh $OUT
#
# --no-deps with the whole closure named: pip cannot resolve for another interpreter against the
# packages that machine already has, and two versions of one package in .whl/ would stop the
# install there. Versions are the course's pins (constraints.txt) where it has them, and otherwise
# the ones its .venv resolved, so the device runs what the tests here ran.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=.whl
py="${PYTHON:-python3}"
[ -x .venv/bin/python ] && py=.venv/bin/python

pin() {  # NAME: the course's pin from constraints.txt
  grep -i "^$1==" constraints.txt | head -n1
}
wanted=(
  # the library and the check: config, PNG labels, progress bars
  "$(pin omegaconf)" "$(pin PyYAML)" "$(pin pypng)" "$(pin tqdm)"
  # papermill and what it needs that the image lacks
  "$(pin papermill)" "$(pin nbclient)" "$(pin nbformat)" entrypoints==0.4.2 tenacity==9.2.1
  fastjsonschema==2.22.3 jsonschema==4.26.0 jsonschema-specifications==2025.9.1 referencing==0.37.0
  rpds-py==2026.9.1
  # the notebook's kernel
  "$(pin ipykernel)" jupyter-client==8.10.0 jupyter-core==5.9.1 platformdirs==4.14.9 traitlets==5.16.1
  pyzmq==27.3.0 tornado==6.6.1 comm==0.2.3 debugpy==1.8.22 matplotlib-inline==0.2.2 nest-asyncio2==1.7.4
  ipython==9.19.1 ipython-pygments-lexers==1.1.1 jedi==0.20.1 parso==0.8.7 pexpect==4.9.0
  ptyprocess==0.7.0 prompt-toolkit==3.0.53 wcwidth==0.9.4 stack-data==0.6.3 executing==2.3.0
  asttokens==3.0.2 pure-eval==0.2.4
)
for w in "${wanted[@]}"; do
  [ -n "$w" ] || { echo "gpu_wheels.sh: a pin is missing from constraints.txt" >&2; exit 1; }
done

rm -rf "$dest.partial"
mkdir -p "$dest.partial"
"$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --abi cp312 --abi abi3 --abi none \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any \
  -d "$dest.partial" "${wanted[@]}"
# replace the folder only once every wheel came, so a broken download leaves the last good set
rm -rf "$dest"
mv "$dest.partial" "$dest"
count=$(ls "$dest"/*.whl | wc -l)
echo "$dest: $count wheels, $(du -sh "$dest" | cut -f1) ($(du -sb "$dest" | cut -f1) bytes; the device carries 64 MiB in all)"
