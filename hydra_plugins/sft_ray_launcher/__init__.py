"""`hydra/launcher=ray`: a multirun's jobs as Ray tasks (config.py, ray_launcher.py)."""

from hydra_plugins.sft_ray_launcher import config  # noqa: F401 (registers the config)
