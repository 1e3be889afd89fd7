"""The launcher's config, registered in Hydra's ConfigStore as `hydra/launcher: ray`.

Why not the `hydra-ray-launcher` plugin (1.2.2): it pins `cloudpickle<3`, which conflicts with
joblib (>= 1.5 needs cloudpickle >= 3) in the same environment, pulls boto3 for its AWS launcher,
and takes resources only as raw `ray.remote` arguments. This launcher is the same thin layer on
Ray's public API (`ray.init`, `ray.remote`, `ray.get`) with per-job resources as settings.
"""

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore


@dataclass
class RayLauncherConf:
    _target_: str = "hydra_plugins.sft_ray_launcher.ray_launcher.RayLauncher"
    # null: start a Ray instance on this machine for the sweep (or join the one this process
    # started); "auto": the cluster `ray start` runs here; "ray://<head>:10001": a remote cluster
    address: str | None = None
    # what each job asks Ray for; Ray runs as many jobs at once as fit, and sets each job's
    # CUDA_VISIBLE_DEVICES to the GPUs it was given (a DDP job asks for several, with
    # trainer.strategy=ddp_spawn: `ddp` would re-run the Ray worker's command line)
    cpus_per_job: float = 1
    gpus_per_job: float = 0
    # Ray retries a job whose worker process died (not one that raised: sft-train records those)
    max_retries: int = 0
    # more ray.init() arguments, e.g. {num_cpus: 8, num_gpus: 2} for the local instance, or
    # {runtime_env: {working_dir: .}} to ship the code to a remote cluster
    init: dict[str, Any] = field(default_factory=dict)


ConfigStore.instance().store(
    group="hydra/launcher", name="ray", node=RayLauncherConf, provider="sft"
)
