"""`hydra/launcher=local_jobs`: submitit's local launcher, stopped by Ctrl-C as sft-train's
other sweeps are (local_jobs.py)."""
