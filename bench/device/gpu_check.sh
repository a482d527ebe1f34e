#!/usr/bin/env bash
# One call on a lent GPU machine: issue 13's GPU figures. First, here (it reaches PyPI):
#     bash bench/device/prepare.sh            # the wheels that machine lacks, into .whl/
# then with the device tool's `run`:
#     command: bash bench/device/gpu_check.sh [quick|full|compile]
#     carry:   [".whl"]          timeout_s: 590
# quick (the default; minutes): bench_postprocess on CUDA, then bench_sdxl --quick: a full-size
#   SDXL architecture with random weights, 1024 px, 20 steps, batches 1 and 4, the raw
#   diffusers loop and the server end to end, and what each process holds;
# full: the same with batches 1, 2 and 4 and 8 jobs each;
# compile: only batch 1 with IMAGESMITH_COMPILE=on (raw loop and server each compile: minutes).
# What it prints is also written to $OUT/gpu_check.log, line by line (a call cut off at its time
# limit keeps what came before), and the servers' logs (the model child's tracebacks) go to $OUT
# when it ends. PYTHON overrides the interpreter (the machine's python3 holds its torch).
set -uo pipefail
cd "$(dirname "$0")/../.."
mode="${1:-quick}"
python="${PYTHON:-python3}"
out="${OUT:-/tmp/gpu-check}"
mkdir -p "$out"
keep_logs() {
  for log in /tmp/sdxl/srv-*/server.log; do
    [ -f "$log" ] && cp "$log" "$out/$(basename "$(dirname "$log")").log"
  done
}
trap keep_logs EXIT
trap 'exit 143' TERM INT
"$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH="/tmp/site:$PWD/src:$PWD" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
sdxl=("$python" bench/bench_sdxl.py --scale full --size 1024 --steps 20 --work /tmp/sdxl)
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  "$python" -c "import torch, diffusers, transformers, fastapi, sqlalchemy; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'diffusers', diffusers.__version__, 'transformers', transformers.__version__)"
  case "$mode" in
    quick) "$python" bench/bench_postprocess.py --device cuda && "${sdxl[@]}" --batches 1,4 --jobs 4 ;;
    full) "$python" bench/bench_postprocess.py --device cuda && "${sdxl[@]}" --batches 1,2,4 --jobs 8 ;;
    compile) "${sdxl[@]}" --batches 1 --jobs 4 --compile on --no-demo ;;
    *) echo "usage: gpu_check.sh [quick|full|compile]"; exit 2 ;;
  esac
} 2>&1 | grep --line-buffered -v -E "Loading (pipeline components|weights)|Writing model shards" |
  tee "$out/gpu_check.log"
