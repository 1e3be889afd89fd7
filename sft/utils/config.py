"""Config helpers: the resolvers the configs use, printing and saving the resolved config."""

from pathlib import Path

import rich
import rich.syntax
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from sft.utils.resume import config_subdir, run_dir

PROJECT_ROOT = Path(__file__).resolve().parents[2]
# An absolute path: `sft-train` (a console script) and `python -m sft.train` find the same configs.
CONF_DIR = str(PROJECT_ROOT / "conf")


def _backbone_norm(name: str, which: str) -> list[float]:
    from sft.models.backbones import backbone_normalization  # late: imports timm/torchvision

    mean, std = backbone_normalization(name)
    return list(mean if which == "mean" else std)


# `${sft_root:}` in conf/paths: the checkout that holds conf/ and sft/, wherever the run starts.
# `${backbone_norm:efficientnet_lite0,mean}`: the input statistics a backbone's weights expect.
# `${sft_run_dir:...}`, `${sft_config_subdir:...}`: run directories (conf/hydra, sft/utils/resume.py).
for _name, _resolver in (
    ("sft_root", lambda: str(PROJECT_ROOT)),
    ("backbone_norm", _backbone_norm),
    ("sft_run_dir", run_dir),
    ("sft_config_subdir", config_subdir),
):
    if not OmegaConf.has_resolver(_name):
        OmegaConf.register_new_resolver(_name, _resolver)


@rank_zero_only
def print_and_save_config(cfg: DictConfig, output_dir: str | Path) -> None:
    """Print the resolved config and write it as `config_resolved.yaml` in the run directory.

    Hydra's own `.hydra/config.yaml` keeps interpolations; this file records the values used.
    """
    text = OmegaConf.to_yaml(cfg, resolve=True)
    rich.print(rich.syntax.Syntax(text, "yaml", theme="ansi_dark"))
    Path(output_dir).mkdir(parents=True, exist_ok=True)
    (Path(output_dir) / "config_resolved.yaml").write_text(text)
