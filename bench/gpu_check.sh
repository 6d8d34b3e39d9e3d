#!/usr/bin/env bash
# GPU check: does amlc's GPU path work on this machine, how fast, and does it agree with the CPU?
#
#   bench/gpu_check.sh            # on a machine with one NVIDIA GPU, nvcc and the package index
#
# Steps, each timed (logs in $OUT/logs/<step>.log):
#   install   a venv (system packages visible) with amlc's llm, paddle and gpu extras: torch with
#             CUDA, Unsloth, onnxruntime-gpu in place of onnxruntime; llama-cpp-python built with
#             CUDA for this GPU's architecture only (in the background, niced, while the rest runs)
#   models    SmolLM2-135M-Instruct (GGUF) and llama.cpp's converter, from PyPI (amlc.llm.assets)
#   store     the test.csv rows whose images are in $DATA/test_images, fetched from that folder
#   ocr       PaddleOCR through `amlc run --stages ocr,extract` on CUDA (1 worker, then the default
#             4) and on the CPU (one worker per core); agreement of texts and rules answers
#   train     Unsloth LoRA on SmolLM2 for $STEPS steps (`amlc train --config lora_gpu`)
#   export    merge, GGUF, Q8_0 (`amlc export-model`, greedy agreement with the merged model)
#   predict   `amlc predict` every layer offloaded: rows decoded together (the default) and one by
#             one (--llm-batch 1); then on the CPU (--gpu-layers 0, one worker per core);
#             agreement of the answers with the CPU's
# and one table at the end: items/s (steady rate, from the store's timestamps, start-up left
# out), peak GPU memory (nvidia-smi, 4 samples a second), agreement with the CPU answers.
#
# Settings (environment): AMLC_DATA (default ../shared/data), OUT (default amlc-work/gpu-check),
# PYTHON (default python3), STEPS (LoRA steps, default 20), AMLC_WHEELS (a folder of wheels and
# sdists to install from instead of the index: pip --no-index --find-links), LLM_BENCH=1 and
# LLM_BASE (the whole LLM recipe with Unsloth at the end; see that step).
# DRY=1: a rehearsal on a CPU (tests/test_gpu_check.py runs it): no install (PYTHON's own venv as
# it is), the first DRY_IMAGES test images (default 4), OCR on the CPU, LoRA with lora_tiny,
# rows together at --llm-batch 8, and a stand-in nvidia-smi on PATH; it checks this script's
# steps, logs, agreement and table, not a GPU.
# Needs: nvidia-smi, nvcc and cmake on PATH (llama.cpp's CUDA build), python >= 3.11 with venv.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
DATA="$(cd "${AMLC_DATA:-$root/../shared/data}" && pwd)"
OUT="${OUT:-$root/amlc-work/gpu-check}"
PYTHON="${PYTHON:-python3}"
STEPS="${STEPS:-20}"
DRY="${DRY:-0}"
VENV="$OUT/venv"
CUDA=cuda TRAIN_CONFIG=lora_gpu CHECK_N=40 BATCH="" IMAGE_LIMIT=0
if [ "$DRY" = 1 ]; then
    VENV="$(cd "$(dirname "$(command -v "$PYTHON")")/.." && pwd)"
    CUDA=cpu TRAIN_CONFIG=lora_tiny CHECK_N=4 BATCH=8 IMAGE_LIMIT="${DRY_IMAGES:-4}"
fi
PY="$VENV/bin/python"
mkdir -p "$OUT/logs"
ROWS=()           # table rows: step|seconds|items|items/s|peak GPU MiB|agreement with CPU
T0=$EPOCHREALTIME

say() { printf '[%6.0fs] %s\n' "$(elapsed "$T0")" "$*"; }
elapsed() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'; }
fail() { say "FAILED: $1; last lines of $OUT/logs/$1.log:"; tail -n 40 "$OUT/logs/$1.log" >&2; exit 1; }

# step NAME COMMAND...: run it with its output in the step's log and nvidia-smi sampling the GPU
# memory meanwhile; sets SECS and GPU_MIB (peak used during the step).
step() {
    local name=$1 start=$EPOCHREALTIME sampler
    shift
    say "$name ..."
    nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 250 >"$OUT/logs/$name.gpu" 2>/dev/null &
    sampler=$!
    # A subshell of its own: `set -e` holds inside shell functions there (not in an `if`).
    ( "$@" ) >"$OUT/logs/$name.log" 2>&1 &
    if ! wait $!; then
        kill "$sampler" 2>/dev/null || true
        fail "$name"
    fi
    kill "$sampler" 2>/dev/null || true
    wait "$sampler" 2>/dev/null || true
    SECS=$(elapsed "$start")
    GPU_MIB=$(sort -n "$OUT/logs/$name.gpu" | tail -n 1)
    say "$name done in ${SECS}s, peak GPU memory ${GPU_MIB:-?} MiB"
}

row() { ROWS+=("$1|$SECS|$2|$3|${GPU_MIB:-?}|$4"); }

amlc() { "$VENV/bin/amlc" "$@"; }

# Python helpers over stores (bench/run.py's): steady rate of a stage, agreement of two stores.
helper() { "$PY" - "$@" <<'EOF'
import sys
sys.path.insert(0, "bench")
from pathlib import Path
from run import stage_rates, store_rows
what, *args = sys.argv[1:]
if what == "rate":                                   # rate WORKDIR STAGE_PREFIX
    rates = {s: r for s, r in stage_rates(Path(args[0])).items() if s.startswith(args[1])}
    print(f"{next(iter(rates.values()))[1]:.2f}" if rates else "nan")
elif what == "agree":                                # agree STORE_A STORE_B SQL(key, value)
    a, b = (dict(store_rows(Path(w), args[2])) for w in args[:2])
    same = sum(a[k] == b.get(k) for k in a)
    print(f"{same}/{len(a)} ({100 * same / max(len(a), 1):.1f}%)")
EOF
}

# ---------------------------------------------------------------- preflight
say "GPU: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | head -n 1)"
ARCH=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -n 1 | tr -d '.')
say "compute capability $ARCH, $(nproc) CPUs, $("$PYTHON" --version), nvcc $(nvcc --version | grep -o 'release [0-9.]*' || echo missing)"
[ -d "$DATA/test_images" ] || { say "no $DATA/test_images: set AMLC_DATA"; exit 1; }

# ---------------------------------------------------------------- install
INDEX=()
[ -n "${AMLC_WHEELS:-}" ] && INDEX=(--no-index --find-links "$AMLC_WHEELS")
requirement() {  # requirement EXTRA NAME: the pinned requirement of NAME in pyproject's EXTRA
    "$PYTHON" -c "import sys, tomllib; deps = tomllib.load(open('pyproject.toml', 'rb'))['project']['optional-dependencies'][sys.argv[1]]; print(next(d for d in deps if d.startswith(sys.argv[2])))" "$1" "$2"
}
llm_rest() {  # the llm extra without llama-cpp-python (built on its own, with CUDA)
    "$PYTHON" -c "import tomllib; print(' '.join(d for d in tomllib.load(open('pyproject.toml', 'rb'))['project']['optional-dependencies']['llm'] if not d.startswith('llama-cpp-python')))"
}
install() {
    local pip=("$PY" -m pip --disable-pip-version-check) build
    "$PYTHON" -m venv --system-site-packages "$VENV"
    "${pip[@]}" install -q "${INDEX[@]}" --upgrade pip
    # llama.cpp for this GPU only (one architecture, no FlashAttention kernels): minutes, not tens.
    ( CMAKE_ARGS="-DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES=${ARCH}-real -DGGML_CUDA_FA=off -DGGML_CUDA_NCCL=off" \
      CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" nice -n 19 "${pip[@]}" wheel -q --no-deps --no-cache-dir \
        --no-binary llama-cpp-python "${INDEX[@]}" -w "$OUT/wheels" "$(requirement llm llama-cpp-python)" \
      >"$OUT/logs/llama-build.log" 2>&1 ) &
    build=$!
    # shellcheck disable=SC2046
    "${pip[@]}" install -q "${INDEX[@]}" -e ".[paddle,gpu]" $(llm_rest)
    # onnxruntime-gpu and onnxruntime are the same module: keep only the GPU one.
    "${pip[@]}" uninstall -q -y onnxruntime
    "${pip[@]}" install -q "${INDEX[@]}" --force-reinstall --no-deps "$(requirement gpu onnxruntime-gpu)"
    say "waiting for the llama.cpp CUDA build ($OUT/logs/llama-build.log)"
    wait "$build" || { tail -n 40 "$OUT/logs/llama-build.log"; return 1; }
    "${pip[@]}" install -q "${INDEX[@]}" "$OUT"/wheels/llama_cpp_python-*.whl
    "$PY" - <<'EOF'
import llama_cpp, onnxruntime, torch
assert torch.cuda.is_available(), "torch sees no GPU"
assert "CUDAExecutionProvider" in onnxruntime.get_available_providers(), onnxruntime.get_available_providers()
assert llama_cpp.llama_supports_gpu_offload(), "llama-cpp-python was built without GPU offload"
print("torch", torch.__version__, "onnxruntime", onnxruntime.__version__, "llama-cpp-python", llama_cpp.__version__)
EOF
}
if [ "$DRY" = 1 ]; then
    say "dry run: no install, $VENV as it is"
else
    step install install
    ROWS+=("install (venv, extras, llama.cpp CUDA build)|$SECS|||$GPU_MIB|")
fi
# Nothing below needs the network: the models come from PyPI wheels, the rest is local.
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1

# ---------------------------------------------------------------- models and the store
step models "$PY" -m amlc.llm.assets
SMOL=$(awk '/^smollm2:/ { print $2 }' "$OUT/logs/models.log")
say "SmolLM2: $SMOL"

make_store() {
    rm -rf "$OUT/store"
    mkdir -p "$OUT/store"
    "$PY" - "$DATA" "$OUT/store/test.csv" "$IMAGE_LIMIT" <<'EOF'
import csv, sys
from pathlib import Path
data, out, limit = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
images = sorted(p.name for p in (data / "test_images").iterdir())
images = set(images[:limit] if limit else images)
with (data / "test.csv").open(newline="") as src, open(out, "w", newline="") as dst:
    rows = csv.reader(src)
    writer = csv.writer(dst)
    writer.writerow(next(rows))
    writer.writerows(r for r in rows if r[1].rsplit("/", 1)[-1] in images)
EOF
    amlc --workdir "$OUT/store" ingest "$OUT/store/test.csv" --split test
    amlc --workdir "$OUT/store" run --stages fetch --exit-when-done --no-dashboard --local-images "$DATA/test_images"
}
step store make_store
IMAGES=$("$PY" -c "import csv, sys; print(len({r['image_link'] for r in csv.DictReader(open(sys.argv[1]))}))" "$OUT/store/test.csv")
ROWS_N=$(($(wc -l <"$OUT/store/test.csv") - 1))

copy_store() { rm -rf "$2"; cp -r "$1" "$2"; rm -f "$2/run.lock"; }

# ---------------------------------------------------------------- OCR
ocr() {  # ocr NAME DEVICE WORKERS
    copy_store "$OUT/store" "$OUT/$1"
    step "$1" amlc --workdir "$OUT/$1" run --stages ocr,extract --exit-when-done --no-dashboard \
        --ocr-engine paddleocr --ocr-device "$2" ${3:+--ocr-workers "$3"}
}
ocr ocr_cuda_1 "$CUDA" 1
row "PaddleOCR, CUDA, 1 worker" "$IMAGES" "$(helper rate "$OUT/ocr_cuda_1" ocr)" ""
ocr ocr_cuda "$CUDA" ""
row "PaddleOCR, CUDA, default workers" "$IMAGES" "$(helper rate "$OUT/ocr_cuda" ocr)" ""
ocr ocr_cpu cpu ""
row "PaddleOCR, CPU, $(nproc) workers" "$IMAGES" "$(helper rate "$OUT/ocr_cpu" ocr)" "(reference)"
TEXTS="SELECT i.link, o.text FROM ocr_results o JOIN images i ON i.id = o.image_id"
RULES="SELECT s.idx, p.prediction FROM predictions p JOIN samples s ON s.id = p.sample_id WHERE p.source = 'rules'"
ROWS+=("  OCR text, CUDA vs CPU||||| $(helper agree "$OUT/ocr_cuda" "$OUT/ocr_cpu" "$TEXTS")")
ROWS+=("  rules answers on that text||||| $(helper agree "$OUT/ocr_cuda" "$OUT/ocr_cpu" "$RULES")")

# ---------------------------------------------------------------- LoRA with Unsloth, export
step sft amlc sft-data --from "$DATA/ocr_labeled.csv" --out "$OUT/sft"
step train amlc train --base "$SMOL" --data "$OUT/sft/train.jsonl" --out "$OUT/run" --config "$TRAIN_CONFIG" \
    --max-steps "$STEPS"
BACKEND=$("$PY" -c "import json, sys; print(json.load(open(sys.argv[1]))['backend'])" "$OUT/run/train_info.json")
STEP_ROWS=$("$PY" -c "import sys, tomllib; print(tomllib.load(open(sys.argv[1], 'rb'))['batch_size'])" \
    "amlc/llm/configs/$TRAIN_CONFIG.toml")
row "LoRA on SmolLM2 ($BACKEND), $STEPS steps x $STEP_ROWS rows" "$((STEPS * STEP_ROWS)) rows" \
    "$(awk -v n="$((STEPS * STEP_ROWS))" -v s="$SECS" 'BEGIN { printf "%.1f", n / s }')" \
    "$([ "$BACKEND" = unsloth ] && echo "Unsloth ran" || echo "NOT Unsloth: see logs/train.log")"
step export amlc export-model "$OUT/run/adapter" --out "$OUT/export" --quant q8_0 \
    --check "$OUT/sft/val.jsonl" --check-n "$CHECK_N"
AGREE=$("$PY" -c "import json, sys; print(json.load(open(sys.argv[1]))['agreement'])" "$OUT/export/export.json")
row "merge + GGUF + Q8_0" "1 model" "" "Q8_0 vs merged model: $AGREE"
MODEL="$OUT/export/model-q8_0.gguf"

# ---------------------------------------------------------------- predict
predict() {  # predict NAME ARGS...: the model on a copy of the CUDA-OCR'd store
    local name=$1
    shift
    copy_store "$OUT/ocr_cuda" "$OUT/$name"
    step "$name" amlc --workdir "$OUT/$name" predict --model "$MODEL" --ocr-engine paddleocr --no-fallback \
        --no-dashboard "$@"
}
ANSWERS="SELECT s.idx, p.prediction FROM predictions p JOIN samples s ON s.id = p.sample_id WHERE p.source = 'model-q8_0'"
predict predict_cpu --gpu-layers 0
CPU_RATE=$(helper rate "$OUT/predict_cpu" predict)
predict predict_gpu_batched --gpu-layers -1 ${BATCH:+--llm-batch "$BATCH"}
row "predict, every layer on the GPU, rows together" "$ROWS_N" "$(helper rate "$OUT/predict_gpu_batched" predict)" \
    "$(helper agree "$OUT/predict_gpu_batched" "$OUT/predict_cpu" "$ANSWERS")"
predict predict_gpu_one --gpu-layers -1 --llm-batch 1
row "predict, every layer on the GPU, one by one" "$ROWS_N" "$(helper rate "$OUT/predict_gpu_one" predict)" \
    "$(helper agree "$OUT/predict_gpu_one" "$OUT/predict_cpu" "$ANSWERS")"
SECS="" GPU_MIB=""
ROWS+=("predict, CPU, $(nproc) workers||$ROWS_N|$CPU_RATE||(reference)")

# ---------------------------------------------------------------- the LLM recipe on the GPU (optional)
# LLM_BENCH=1: `amlc llm-bench` with Unsloth and the lora_gpu config: SFT rows, training, Q8_0,
# the rules+model weight and the table rules / model / rules+model on ocr_labeled.csv's validation
# half. LLM_BASE: a larger base put on this machine beforehand (an HF folder, e.g.
# Qwen2.5-1.5B-Instruct); SmolLM2 otherwise (nothing larger can be fetched from the index).
if [ "${LLM_BENCH:-0}" = 1 ]; then
    step llm_bench amlc llm-bench --out "$OUT/llm-bench" --base "${LLM_BASE:-$SMOL}" --config lora_gpu
    tail -n 16 "$OUT/logs/llm_bench.log"
fi

# ---------------------------------------------------------------- the table
say "all steps done in $(elapsed "$T0")s"
printf '\n%-52s %8s %10s %9s %9s  %s\n' "step" "seconds" "items" "items/s" "GPU MiB" "agreement with the CPU"
for r in "${ROWS[@]}"; do
    IFS='|' read -r name secs items rate mib agree <<<"$r"
    printf '%-52s %8s %10s %9s %9s  %s\n' "$name" "$secs" "$items" "$rate" "$mib" "$agree"
done
