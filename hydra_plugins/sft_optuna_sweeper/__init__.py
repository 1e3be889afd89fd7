"""A Hydra sweeper on Optuna >= 4 (ask/tell): `hydra/sweeper=sft_optuna`, see `config.py`.

`hydra-optuna-sweeper` 1.3 pins `optuna<3` (and its SQLite storage breaks with SQLAlchemy 2), so
the project ships its own. Hydra imports every public module of `hydra_plugins.*` when it scans
for plugins, so the modules that import Optuna are private and loaded only when a sweep starts.
"""
