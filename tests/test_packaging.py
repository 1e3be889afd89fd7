"""sft as an installed package: a wheel (configs inside) run from another directory, with a
user's own config folder and backbone module (README "Install as a package", "Your own configs
and code"). Built and installed with --no-deps into a throwaway folder: torch and the other
dependencies come from the test environment, nothing is downloaded."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import FAST, run_module
from omegaconf import OmegaConf

from sft.utils.config import PROJECT_ROOT

USER_BACKBONE = '''
from torch import nn


class TinyNet(nn.Module):
    """A user's backbone: any module mapping images to (B, num_features)."""

    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.num_features = width
        self.body = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()
        )

    def forward(self, x):
        return self.body(x)
'''

USER_MODEL = """
# a model of the user's own, beside the packaged ones
_target_: sft.models.SFTClassifier
_recursive_: false
num_classes: 10
backbone:
  _target_: my_backbones.TinyNet
  width: 6
head:
  _target_: sft.models.heads.FusedHead
  branch: linear
"""

USER_EXPERIMENT = """
# @package _global_
defaults:
  - override /data: cifar10
  - override /model: my_tiny
name: my_cifar
data:
  samples_per_class: 4
  batch_size: 8
  val_size: 64
"""


@pytest.mark.slow
def test_wheel_runs_from_any_directory_with_user_configs(tmp_path, data_dir):
    wheels = tmp_path / "wheels"
    build = ["pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(wheels)]
    subprocess.run([sys.executable, "-m", *build, str(PROJECT_ROOT)], check=True, timeout=300)
    (wheel,) = wheels.glob("sft-*.whl")
    site = tmp_path / "site"
    install = ["pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)]
    subprocess.run([sys.executable, "-m", *install], check=True, timeout=300)
    assert (site / "sft" / "conf" / "train.yaml").is_file()
    assert len(list((site / "sft" / "conf").rglob("*.yaml"))) == len(
        list((PROJECT_ROOT / "conf").rglob("*.yaml"))
    )

    user = tmp_path / "user"
    (user / "conf" / "experiment").mkdir(parents=True)
    (user / "conf" / "model").mkdir()
    (user / "my_backbones.py").write_text(USER_BACKBONE)
    (user / "conf" / "model" / "my_tiny.yaml").write_text(USER_MODEL)
    (user / "conf" / "experiment" / "my_cifar.yaml").write_text(USER_EXPERIMENT)
    work = tmp_path / "work"
    work.mkdir()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("SFT_")},
        "SFT_DATA_DIR": str(data_dir),
        "PYTHONPATH": os.pathsep.join([str(site), str(user)]),
    }

    packaged = run_module(
        "sft.train", "experiment=cifar10_resnet18", "debug=fdr", *FAST, cwd=work, env=env
    )
    assert packaged.returncode == 0, packaged.stderr[-3000:]
    (resolved,) = (work / "outputs").rglob("config_resolved.yaml")
    paths = OmegaConf.load(resolved).paths
    # the installed copy ran (a checkout's runs go under the checkout): outputs and caches
    # under the current directory
    assert Path(paths.root_dir) == work
    assert Path(paths.cache_dir) == work / ".cache"

    own = run_module(
        "sft.train",
        *["--config-dir", str(user / "conf"), "experiment=my_cifar", "debug=fdr"],
        cwd=work,
        env={**env, "SFT_OUTPUT_DIR": str(tmp_path / "runs")},
    )
    assert own.returncode == 0, own.stderr[-3000:]
    (resolved,) = (tmp_path / "runs").rglob("config_resolved.yaml")
    cfg = OmegaConf.load(resolved)
    assert cfg.name == "my_cifar" and cfg.model.backbone._target_ == "my_backbones.TinyNet"
