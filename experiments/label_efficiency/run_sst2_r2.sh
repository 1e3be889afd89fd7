#!/usr/bin/env bash
# Issue 13: the SST-2 label-efficiency study at 5x the first budget, then the full-data points.
set -euo pipefail
cd "$(dirname "$0")/../.."
# data from $SFT_DATA_DIR, else data/ in the checkout (make data); the checkout's sft-train
# (make install), else the one on PATH (pip install)
sft_train=.venv/bin/sft-train
[ -x "$sft_train" ] || sft_train=sft-train
date
"$sft_train" -m experiment=study_sst2_label_efficiency seed=0,1,2 \
  data.samples_per_class=16,64,256,1024 method=linear_probe,finetune_linear,lpft_fused,lora,lp_lora \
  hydra.sweep.dir=outputs/studies/label_efficiency_sst2_r2
date
"$sft_train" -m experiment=study_sst2_label_efficiency seed=0 \
  data.samples_per_class=null trainer.max_steps=-1 trainer.max_epochs=1 trainer.val_check_interval=1.0 \
  trainer.check_val_every_n_epoch=1 \
  method=finetune_linear,lpft_fused,lora hydra.sweep.dir=outputs/studies/label_efficiency_sst2_r2_full
date
