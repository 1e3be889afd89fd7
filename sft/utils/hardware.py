"""What this machine offers for mixed precision, and the precision `trainer.precision=auto` picks.

Lightning has no "follow the hardware" precision: it defaults to fp32 everywhere. The rule here:
bf16-mixed on GPUs that support bf16 (16-mixed, with a gradient scaler, on older ones); on CPUs
with AMX-BF16 or AVX512-BF16 units, bf16-mixed for model families where it measured faster
(the caller says so; benchmarks/precision_layout.py and benchmarks/vs_anchors.py measure it),
else fp32.
"""

from __future__ import annotations

import functools
import logging
import os
import platform
from pathlib import Path

import torch
from omegaconf import DictConfig

from sft.errors import SFTError

log = logging.getLogger(__name__)

CPU_BF16_FLAGS = ("amx_bf16", "avx512_bf16")


@functools.cache
def _cpuinfo(field: str) -> str | None:
    """The first core's `field` in Linux /proc/cpuinfo; None where it cannot be read."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        name, _, value = line.partition(":")
        if name.strip() == field:
            return value.strip()
    return None


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags; empty where they cannot be read."""
    return frozenset((_cpuinfo("flags") or "").split())


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity: a container's, taskset's or a cluster
    job's share), not the host's `os.cpu_count()`."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def cpu_model() -> str:
    return _cpuinfo("model name") or platform.processor() or platform.machine()


def cpu_has_bf16() -> bool:
    """bf16 matrix units (Intel AMX) or AVX512-BF16 instructions: CPU autocast to bf16 pays."""
    return any(flag in cpu_flags() for flag in CPU_BF16_FLAGS)


def cpu_description() -> str:
    """e.g. 'Intel(R) Xeon(R) Processor, 2 threads, bf16: amx_bf16 avx512_bf16'."""
    bf16 = " ".join(f for f in CPU_BF16_FLAGS if f in cpu_flags()) or "none"
    return f"{cpu_model()}, {torch.get_num_threads()} threads, bf16: {bf16}"


def uses_gpu(accelerator: str) -> bool:
    """Whether Lightning's `accelerator` setting will run on a CUDA GPU."""
    if accelerator in ("gpu", "cuda"):
        return True
    return accelerator == "auto" and torch.cuda.is_available()


def gpu_has_bf16() -> bool:
    """Whether the CUDA GPU computes in bf16 natively (torch's default count says so of GPUs
    that emulate it too: V100, T4)."""
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)


def has_bf16(accelerator: str) -> bool:
    """Whether the device Lightning's `accelerator` runs on computes in bf16 natively."""
    return gpu_has_bf16() if uses_gpu(accelerator) else cpu_has_bf16()


def check_accelerator(trainer_cfg: DictConfig) -> None:
    """A GPU accelerator (trainer=gpu, trainer=ddp) where none is visible: one line naming the
    setting before anything is built (Lightning says "No supported gpu backend found!" once the
    model and data are)."""
    accelerator = str(trainer_cfg.get("accelerator", "auto"))
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise SFTError(
            f"trainer.accelerator={accelerator} but this machine ({cpu_model()}) has no CUDA GPU "
            "that torch can see: run on a GPU machine, or on the CPU (trainer=default, or "
            "trainer=ddp_sim for DDP)"
        )


# what tells a process of the other nodes of a multi-node run: a cluster's environment that
# Lightning reads (SLURM, torchrun/TorchElastic, Kubeflow, LSF, MPI), or its own MASTER_ADDR +
# NODE_RANK
NODES_ENV = (
    "SLURM_NTASKS",
    "MASTER_ADDR",
    "NODE_RANK",
    "GROUP_RANK",
    "TORCHELASTIC_RUN_ID",
    "LSB_JOBID",
    "OMPI_COMM_WORLD_SIZE",
    "PMI_SIZE",
)


def check_nodes(trainer_cfg: DictConfig) -> None:
    """`trainer.num_nodes` > 1 where nothing tells this process of other nodes: the first rank
    waited for them without a word (torch's default: 30 minutes)."""
    nodes = trainer_cfg.get("num_nodes", 1)
    if isinstance(nodes, int) and nodes > 1 and not any(k in os.environ for k in NODES_ENV):
        raise SFTError(
            f"trainer.num_nodes={nodes} but nothing tells this process of other nodes (no SLURM "
            "job, no MASTER_ADDR and NODE_RANK): it would wait for them; run the sweep with "
            "hydra/launcher=slurm_ddp, or start the command on each node with MASTER_ADDR, "
            'MASTER_PORT and NODE_RANK set (README "Scaling out")'
        )


def check_sync_batchnorm(trainer_cfg: DictConfig) -> None:
    """torch syncs batch norms across processes on CUDA GPUs only: on other devices
    `sync_batchnorm` (conf/trainer/ddp.yaml) ends in its ValueError in every DDP rank."""
    accelerator = str(trainer_cfg.get("accelerator", "auto"))
    if trainer_cfg.get("sync_batchnorm") and not uses_gpu(accelerator):
        raise SFTError(
            f"trainer.sync_batchnorm=true needs GPUs (torch's SyncBatchNorm) but this run is on "
            f"trainer.accelerator={accelerator} without one; set trainer.accelerator=gpu on a "
            "machine with GPUs (the debug configs set cpu), trainer.sync_batchnorm=false, or "
            "trainer=ddp_sim for DDP on the CPU"
        )


def choose_precision(accelerator: str, cpu_bf16_pays: bool) -> tuple[str, str]:
    """(Lightning precision, why) for `trainer.precision=auto`.

    cpu_bf16_pays: the model family ran faster under CPU bf16 autocast on a bf16-capable CPU.
    """
    if uses_gpu(accelerator):
        if not torch.cuda.is_available():  # Lightning says so when it builds the trainer
            return "32-true", f"accelerator {accelerator!r} but no CUDA GPU is visible"
        if gpu_has_bf16():
            return "bf16-mixed", f"GPU {torch.cuda.get_device_name()} supports bf16"
        return "16-mixed", f"GPU {torch.cuda.get_device_name()} has no bf16: fp16 with a scaler"
    if accelerator not in ("auto", "cpu"):
        return "32-true", f"accelerator {accelerator!r}: fp32"
    if not cpu_has_bf16():
        return "32-true", f"CPU {cpu_model()} has no AMX-BF16/AVX512-BF16: fp32"
    if not cpu_bf16_pays:
        return "32-true", (
            "CPU has bf16 units, but bf16 was not measured faster for this backbone: fp32 "
            "(trainer.precision=bf16-mixed tries it)"
        )
    return (
        "bf16-mixed",
        f"CPU {cpu_model()} has bf16 units and this backbone family is faster in bf16",
    )


def warn_fp16_weights(trainer_cfg: DictConfig) -> None:
    """A warning for trainer.precision=16-true: Lightning casts the weights and the optimizer's
    state to fp16 without a loss scaler; AdamW's eps (1e-8) and small gradients underflow, and
    a run "completes" having learned nothing (val/loss 5000, chance accuracy on CPU). And for
    bf16-true: bf16 weights keep 8 bits of mantissa, so fine-tuning's small updates (lr 1e-4
    on weights of order 1) round away, and most pretrained weights never move (79 % of
    MiniLM's after 4 steps; val/acc below 32-true's, without a word)."""
    precision = str(trainer_cfg.get("precision"))
    if precision == "16-true":
        log.warning(
            f"trainer.precision={precision}: fp16 weights and optimizer state "
            "without a loss scaler often diverge or learn nothing; 16-mixed or bf16-mixed train "
            "in half precision with fp32 weights"
        )
    elif precision == "bf16-true":
        log.warning(
            f"trainer.precision={precision}: bf16 weights round small updates away (most "
            "pretrained weights do not move at fine-tuning learning rates); bf16-mixed trains "
            "in bf16 with fp32 weights"
        )


def _mps_available() -> bool:
    """Apple's GPU, which Lightning's accelerator=auto picks."""
    return torch.backends.mps.is_available()


def _runs_on_cpu(trainer_cfg: DictConfig) -> bool:
    accelerator = str(trainer_cfg.get("accelerator", "auto"))
    return accelerator == "cpu" or (
        accelerator == "auto" and not uses_gpu(accelerator) and not _mps_available()
    )


def drop_anomaly_detection_under_loss_scaling(trainer_cfg: DictConfig) -> None:
    """`trainer.detect_anomaly` (on in the debug configs) off for fp16 with its loss scaler.

    The scaler starts at 2**16 and skips the steps whose gradients overflow, halving the scale:
    by design, a model's first steps may overflow. The inf of such a step turns NaN in the first
    sum over it (a batch norm's or a folded norm's weight gradient), and anomaly detection
    stops the run at that NaN (seen on an H200: `debug=fdr trainer.precision=16-mixed` with
    EfficientNet-Lite0). Lightning runs 16-mixed as bf16 without a scaler on a CPU."""
    precision = str(trainer_cfg.get("precision"))
    scaled = precision in ("16-mixed", "16") and not _runs_on_cpu(trainer_cfg)
    if scaled and trainer_cfg.get("detect_anomaly"):
        trainer_cfg.detect_anomaly = False
        log.warning(
            f"trainer.detect_anomaly=false under trainer.precision={precision}: fp16's loss "
            "scaler skips the steps whose gradients overflow, and anomaly detection would "
            "stop the run at the NaN such a step makes; bf16-mixed or 32-true keep it"
        )


def resolve_auto_precision(trainer_cfg: DictConfig, cpu_bf16_pays: bool) -> None:
    """Replace `precision: auto` in a trainer config by `choose_precision`'s pick, and say why
    in the run log; an explicit precision is kept as it is (16-mixed on a CPU becomes the
    bf16-mixed Lightning runs there; half precision on a CPU without bf16 units, where it is
    emulated, is warned about)."""
    asked = str(trainer_cfg.get("precision"))
    if asked != "auto":
        on_cpu = _runs_on_cpu(trainer_cfg)
        if asked in ("16", "16-mixed") and on_cpu:
            # what Lightning would run, with its own multi-line warning: CPU autocast has no
            # fp16 loss scaler. Said here once, and recorded as run in config_resolved.yaml
            log.info(
                f"trainer.precision={asked} on CPU runs as bf16-mixed (CPUs have no fp16 "
                "autocast with a loss scaler)"
            )
            asked = trainer_cfg.precision = "bf16-mixed"
        # only where the CPU's flags can be read (Linux): elsewhere bf16 units cannot be told;
        # on a CPU half precision is bf16 by now (16-mixed became bf16-mixed above)
        if asked.startswith("bf16") and on_cpu and cpu_flags() and not cpu_has_bf16():
            log.warning(
                f"trainer.precision={asked} on CPU {cpu_model()}, which has no bf16 units "
                "(AMX-BF16/AVX512-BF16): bf16 is emulated there, and usually slower than "
                "32-true (trainer.precision=auto picks 32-true on this CPU)"
            )
        return
    precision, why = choose_precision(str(trainer_cfg.get("accelerator", "auto")), cpu_bf16_pays)
    trainer_cfg.precision = precision
    log.info(f"trainer.precision=auto -> {precision} ({why})")
