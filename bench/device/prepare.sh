#!/usr/bin/env bash
# Run here (the dev VM, which reaches PyPI) before a GPU check: the wheels the GPU machine lacks,
# for its CPython 3.12, into .whl/ (ignored by git; `run` carries it: carry [".whl"]).
#     bash bench/device/prepare.sh [PYTHON_VERSION]     # default 3.12
set -euo pipefail
cd "$(dirname "$0")/../.."
version="${1:-3.12}"
rm -rf .whl && mkdir .whl
grep -v '^#' bench/device/wheels.txt | grep . > .whl/requirements.txt
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$version" \
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --platform manylinux_2_5_x86_64 --platform manylinux1_x86_64 --platform any \
  -d .whl -r .whl/requirements.txt
rm .whl/requirements.txt
echo "$(ls .whl | wc -l) wheels, $(du -sh .whl | cut -f1) in .whl/"
