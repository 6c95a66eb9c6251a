#!/usr/bin/env bash
# gradvet issue 13's GPU rows in one run (at most 9.5 minutes: the limits below sum to 570 s): run from the repository root on a
# machine with a GPU, with the venv made (`make test` or `make demo`). Results land in ${OUT:-gpu_rows}/.
# Each command has its own time limit, so one slow row cannot take the others' time.
set -u
out="${OUT:-gpu_rows}"
mkdir -p "$out"
py=".venv/bin/python"
run() { local name=$1 limit=$2; shift 2; echo "== $name"; timeout "$limit" "$py" "$@" > "$out/$name.txt" 2>&1; echo "rc=$?" >> "$out/$name.txt"; tail -25 "$out/$name.txt"; }
nvidia-smi --query-gpu=name,memory.total --format=csv > "$out/gpu.txt" 2>&1
run eager_gpt2     170 bench/overhead.py --model gpt2 --device cuda --steps 20 --rounds 3 --only "gradvet default" "gradvet full" --json "$out/eager_gpt2.json"
run compiled_gpt2  250 bench/taps.py --models gpt2 --device cuda --compile inductor --steps 10 --rounds 3 --json "$out/compiled_gpt2.json"
run cuda_peak       60 bench/cuda_peak.py --model gpt2 --profiles economy full --json "$out/cuda_peak.json"
run check_resnet50  90 bench/check_speed.py --model resnet50 --device cuda --batch 32 --size 224 --json "$out/check_resnet50.json"
