#!/usr/bin/env bash
# Issue 13: the CIFAR-10 label-efficiency study at 5x the first budget (400 steps of 32), scored
# on the 10,000 test images. One sweep per method, each a background run of its own (about 9
# jobs of ~4 min on 2 CPU cores; linear_probe much less):
#   nohup bash experiments/label_efficiency/run_cifar10_r2.sh lora lp_lora > cifar10_r2.log 2>&1 &
# then: python experiments/label_efficiency/report.py cifar10
set -euo pipefail
cd "$(dirname "$0")/../.."
# data from $SFT_DATA_DIR, else data/ in the checkout (make data); the checkout's sft-train
# (make install), else the one on PATH (pip install)
sft_train=.venv/bin/sft-train
[ -x "$sft_train" ] || sft_train=sft-train
methods=("$@")
if [ ${#methods[@]} -eq 0 ]; then methods=(linear_probe finetune_linear lpft_fused lora lp_lora); fi
for method in "${methods[@]}"; do
  date
  "$sft_train" -m experiment=study_cifar10_label_efficiency seed=0,1,2 \
    data.samples_per_class=10,100,1000 method="$method" \
    hydra.sweep.dir="outputs/studies/label_efficiency_cifar10_r2_$method"
done
date
