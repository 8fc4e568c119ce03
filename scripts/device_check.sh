#!/usr/bin/env bash
# The prepared GPU check (issue 14, item 3): everything that only a CUDA machine can show, in one run of
# at most 7.5 minutes on one GPU (the step limits add up to 450 s), each measurement written under one output folder.
#
#   bash scripts/device_check.sh [OUT_DIR]        # default: device-check-<date>
#
# 1. env.txt            nvidia-smi, torch / CUDA / GPU name, the installed packages that matter
# 2. pytest_cuda.txt    tests/test_cuda.py: bf16 and fp16 (GradScaler) through the Trainer, the exact distance
#                       on CUDA against the CPU result, torch.compile (inductor), the Accelerate loop in fp16
# 3. bench_overhead.txt scripts/bench_overhead.py on CUDA (time and peak-memory ratios of an EQ-Reg step)
# 4. train_derain.txt   a short EQ-Reg training run on CUDA (train-derain, bf16 where supported, TensorBoard)
# 5. summary.json       exit code and seconds of each step
#
# On a machine without CUDA it says so and exits 0 (nothing to check there). Each step has its own time limit;
# a failing step is recorded and the next one still runs; the script exits 1 if any step failed.
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python}"

if ! "$PYTHON" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    echo "device_check: no CUDA device on this machine (torch.cuda.is_available() is False): nothing to check; exiting 0."
    exit 0
fi

OUT="${1:-device-check-$(date +%Y%m%d-%H%M%S)}"
mkdir -p "$OUT"
SUMMARY="$OUT/summary.tsv"
: > "$SUMMARY"
FAILED=0

step() {  # step NAME LIMIT_SECONDS COMMAND...
    local name="$1" limit="$2"
    shift 2
    echo "device_check: $name (at most ${limit} s) -> $OUT/$name.txt"
    local start=$SECONDS
    timeout --kill-after=10 "$limit" "$@" > "$OUT/$name.txt" 2>&1
    local rc=$?
    echo -e "$name\t$rc\t$((SECONDS - start))" >> "$SUMMARY"
    if [ "$rc" -ne 0 ]; then
        FAILED=1
        echo "device_check: $name FAILED (exit $rc); the last lines:"
        tail -n 15 "$OUT/$name.txt"
    fi
}

step env 30 bash -c "nvidia-smi; $PYTHON -c 'import torch, transformers, accelerate; \
print(\"torch\", torch.__version__, \"cuda\", torch.version.cuda, \"device\", torch.cuda.get_device_name(0)); \
print(\"bf16\", torch.cuda.is_bf16_supported()); print(\"transformers\", transformers.__version__); \
print(\"accelerate\", accelerate.__version__)'"
step pytest_cuda 180 "$PYTHON" -m pytest -q -p no:cacheprovider tests/test_cuda.py -rA --junitxml "$OUT/pytest_cuda.xml"
step bench_overhead 120 "$PYTHON" scripts/bench_overhead.py --device cuda --repeats 10
MP=$("$PYTHON" -c "import torch; print('bf16' if torch.cuda.is_bf16_supported() else 'fp16')")
step train_derain 120 "$PYTHON" -m eqreg_hf train-derain --max-steps 200 --batch-size 16 --crop-size 64 \
    --mixed-precision "$MP" --eqreg.group-order 2 --eqreg.weight 1e-3 --eqreg.distance relative \
    --logging-steps 20 --eval-every 100 --progress false --report-to tensorboard --output-dir "$OUT/train_derain_model"

"$PYTHON" - "$SUMMARY" "$OUT/summary.json" <<'PY'
import json, sys
rows = [line.rstrip("\n").split("\t") for line in open(sys.argv[1]) if line.strip()]
summary = {name: {"exit_code": int(rc), "seconds": int(sec)} for name, rc, sec in rows}
json.dump(summary, open(sys.argv[2], "w"), indent=2)
print(json.dumps(summary, indent=2))
PY
echo "device_check: everything is in $OUT"
exit "$FAILED"
